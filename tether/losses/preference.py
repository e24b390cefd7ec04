"""Pairwise preference losses (the DPO family), a registry keyed by name. Letters: B pairs.

Every loss is a pure function of keyword tensors and floats:

- ``policy_chosen_logps``, ``policy_rejected_logps`` (B,): log π_θ(y|x), summed over response tokens;
- ``ref_chosen_logps``, ``ref_rejected_logps`` (B,) or None: the same under π_ref. None means a
  reference-free loss (log π_ref taken as 0);
- ``chosen_lengths``, ``rejected_lengths`` (B,): response token counts, for the losses that normalise by
  length (SimPO, ORPO, CPO, NLL/RPO; optional for IPO);
- floats such as ``beta``, ``label_smoothing``, ``gamma``.

and returns ``(per_pair_loss (B,), metrics)`` with detached batch-mean metrics. The implicit reward of a
response is r̂(y) = β·(log π_θ(y|x) − log π_ref(y|x)) (Rafailov et al. 2023, §4); ``rewards/accuracies`` is
the fraction of pairs with r̂(y_w) > r̂(y_l).

Formulas follow the papers cited in each docstring; TRL's ``DPOTrainer`` / ``CPOTrainer`` loss types were
used as a cross-check. Combine several with ``combined_preference_loss``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tether.registry import lookup, register

PreferenceLoss = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {}


def register_preference_loss(name: str) -> Callable[[PreferenceLoss], PreferenceLoss]:
    """Decorator: add a loss to ``PREFERENCE_LOSSES`` under ``name``."""
    return register(PREFERENCE_LOSSES, name, "preference loss")


def get_preference_loss(name: str) -> PreferenceLoss:
    """The registered loss called ``name``; a ValueError naming the closest and the valid names otherwise."""
    return lookup(PREFERENCE_LOSSES, name, "preference loss")


def combined_preference_loss(
    names_weights: dict[str, float], **kwargs: torch.Tensor | float | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Σ_k w_k · loss_k, per pair (B,), e.g. ``{"dpo": 1.0, "nll": 0.2}`` or MPO's DPO + BCO + SFT mix.

    Each loss receives only the keyword arguments its signature names, so one batch of tensors and floats
    serves them all; a keyword no registered loss accepts is an error (it is probably a typo). Metrics are
    prefixed with the loss name (``dpo/rewards/chosen``) and ``<name>/loss`` holds each term's mean.
    """
    if not names_weights:
        raise ValueError("combined_preference_loss needs at least one loss name")
    loss_fns = {name: get_preference_loss(name) for name in names_weights}
    known = {param for fn in PREFERENCE_LOSSES.values() for param in inspect.signature(fn).parameters}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"no preference loss takes the argument(s) {unknown}; known: {sorted(known)}")

    weighted_terms = []  # each (B,)
    metrics: dict[str, torch.Tensor] = {}
    for name, weight in names_weights.items():
        loss_fn = loss_fns[name]
        accepted = inspect.signature(loss_fn).parameters
        loss, loss_metrics = loss_fn(**{key: value for key, value in kwargs.items() if key in accepted})
        weighted_terms.append(weight * loss)
        metrics[f"{name}/loss"] = loss.detach().mean()
        metrics.update({f"{name}/{key}": value for key, value in loss_metrics.items()})
    return torch.stack(weighted_terms).sum(dim=0), metrics


# ---------------------------------------------------------------------------------------------------------
# shared pieces


def _logratio(policy_logps: torch.Tensor, ref_logps: torch.Tensor | None) -> torch.Tensor:
    """log π_θ(y|x) − log π_ref(y|x) (B,); the policy log-prob alone when there is no reference."""
    return policy_logps if ref_logps is None else policy_logps - ref_logps


def _per_token(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Length-normalised log-prob log π(y|x) / |y| (B,); an empty response counts as one token."""
    return logps / lengths.to(logps.dtype).clamp(min=1.0)


def _reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """Batch means of the implicit rewards (B,) of chosen and rejected, their margin, and the accuracy."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    margins = chosen_rewards - rejected_rewards
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": margins.mean(),
        "rewards/accuracies": (margins > 0).float().mean(),
    }


def _check_label_smoothing(label_smoothing: float, upper: float, loss_name: str) -> None:
    if not 0.0 <= label_smoothing < upper:
        raise ValueError(f"{loss_name}: label_smoothing must be in [0, {upper}), got {label_smoothing}")


# ---------------------------------------------------------------------------------------------------------
# reference-anchored losses: functions of the log-ratios Δ_w = log π_θ(y_w|x) − log π_ref(y_w|x), Δ_l


@register_preference_loss("dpo")
def dpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO, sigmoid loss: −log σ(β·(Δ_w − Δ_l)). Rafailov et al. 2023, "Direct Preference Optimization",
    Eq. 7.

    Its gradient is −β·σ(r̂_l − r̂_w)·[∇log π(y_w|x) − ∇log π(y_l|x)] (§4, "What does the DPO update do?"):
    pairs the implicit reward ranks wrongly get the largest weight.
    """
    chosen_rewards = beta * _logratio(policy_chosen_logps, ref_chosen_logps)  # (B,)
    rejected_rewards = beta * _logratio(policy_rejected_logps, ref_rejected_logps)  # (B,)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return loss, _reward_metrics(chosen_rewards, rejected_rewards)


@register_preference_loss("cdpo")
def cdpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Conservative DPO: labels flipped with probability ε, so the target is smoothed,
    −(1 − ε)·log σ(βh) − ε·log σ(−βh) with h = Δ_w − Δ_l. Mitchell 2023, "A note on DPO with noisy
    preferences & relationship to IPO" (the cDPO objective). ε = 0 is DPO.
    """
    _check_label_smoothing(label_smoothing, 1.0, "cdpo")
    chosen_rewards = beta * _logratio(policy_chosen_logps, ref_chosen_logps)
    rejected_rewards = beta * _logratio(policy_rejected_logps, ref_rejected_logps)
    logits = chosen_rewards - rejected_rewards  # (B,) βh
    loss = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return loss, _reward_metrics(chosen_rewards, rejected_rewards)


@register_preference_loss("robust")
def robust_dpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Robust DPO (rDPO): the loss de-biased for labels flipped with known probability ε < 1/2,
    [(1 − ε)·ℓ(βh) − ε·ℓ(−βh)] / (1 − 2ε) with ℓ(z) = −log σ(z), h = Δ_w − Δ_l. Chowdhury, Kini &
    Natarajan 2024, "Provably Robust DPO: Aligning Language Models with Noisy Feedback", §3 (the unbiased
    loss ℓ̂_ε). Unlike cDPO the flipped term enters with a minus sign, so its expectation under noise is
    the clean DPO loss. ε = 0 is DPO.
    """
    _check_label_smoothing(label_smoothing, 0.5, "robust")
    chosen_rewards = beta * _logratio(policy_chosen_logps, ref_chosen_logps)
    rejected_rewards = beta * _logratio(policy_rejected_logps, ref_rejected_logps)
    logits = chosen_rewards - rejected_rewards  # (B,) βh
    clean = -F.logsigmoid(logits)
    flipped = -F.logsigmoid(-logits)
    loss = ((1.0 - label_smoothing) * clean - label_smoothing * flipped) / (1.0 - 2.0 * label_smoothing)
    return loss, _reward_metrics(chosen_rewards, rejected_rewards)


@register_preference_loss("ipo")
def ipo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO: regress the log-ratio gap onto a fixed target, (h − 1/(2τ))² with h = Δ_w − Δ_l and τ = beta.
    Azar et al. 2024, "A General Theoretical Paradigm to Understand Learning from Human Preferences",
    Eq. 17.

    With ``chosen_lengths``/``rejected_lengths`` the log-ratios are per-token averages, so the squared
    target does not scale with response length (TRL's choice, which its authors say the IPO authors
    confirmed); without them, sequence sums as in the paper.
    """
    chosen_logratio = _logratio(policy_chosen_logps, ref_chosen_logps)
    rejected_logratio = _logratio(policy_rejected_logps, ref_rejected_logps)
    if chosen_lengths is not None and rejected_lengths is not None:
        chosen_logratio = _per_token(chosen_logratio, chosen_lengths)
        rejected_logratio = _per_token(rejected_logratio, rejected_lengths)
    loss = (chosen_logratio - rejected_logratio - 1.0 / (2.0 * beta)) ** 2
    return loss, _reward_metrics(beta * chosen_logratio, beta * rejected_logratio)


@register_preference_loss("hinge")
def hinge_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hinge (SLiC) loss on the reference-normalised likelihood, max(0, 1 − β·(Δ_w − Δ_l)).

    Zhao et al. 2023, "SLiC-HF", Eq. 1 (rank-calibration hinge max(0, δ − log π(y_w) + log π(y_l)));
    Liu et al. 2024, "Statistical Rejection Sampling Improves Preference Optimization" (RSO), §3, which
    normalises by π_ref and writes the margin as δ = 1/β. Without a reference it is SLiC's own hinge.
    """
    chosen_rewards = beta * _logratio(policy_chosen_logps, ref_chosen_logps)
    rejected_rewards = beta * _logratio(policy_rejected_logps, ref_rejected_logps)
    loss = torch.relu(1.0 - (chosen_rewards - rejected_rewards))
    return loss, _reward_metrics(chosen_rewards, rejected_rewards)


@register_preference_loss("exo_pair")
def exo_pair_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    label_smoothing: float = 1e-3,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """EXO for pairs: reverse KL(q ‖ p) between the policy's pair distribution q = softmax(β·Δ) over
    {y_w, y_l} and the smoothed label p = (1 − ε, ε):
    q_w·(log q_w − log(1 − ε)) + q_l·(log q_l − log ε), q_w = σ(βh), h = Δ_w − Δ_l.
    Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model Alignment", Eq. 16 (K = 2).
    ε must be in (0, 1): with ε = 0 the target puts no mass on y_l and the KL is infinite.
    """
    if not 0.0 < label_smoothing < 1.0:
        raise ValueError(f"exo_pair: label_smoothing must be in (0, 1), got {label_smoothing}")
    chosen_rewards = beta * _logratio(policy_chosen_logps, ref_chosen_logps)
    rejected_rewards = beta * _logratio(policy_rejected_logps, ref_rejected_logps)
    logits = chosen_rewards - rejected_rewards  # (B,) βh
    log_q_chosen, log_q_rejected = F.logsigmoid(logits), F.logsigmoid(-logits)
    log_p_chosen, log_p_rejected = math.log1p(-label_smoothing), math.log(label_smoothing)
    loss = log_q_chosen.exp() * (log_q_chosen - log_p_chosen) + log_q_rejected.exp() * (
        log_q_rejected - log_p_rejected
    )
    return loss, _reward_metrics(chosen_rewards, rejected_rewards)


@register_preference_loss("nca_pair")
def nca_pair_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """NCA for pairs: −log σ(r̂_w) − ½·log σ(−r̂_w) − ½·log σ(−r̂_l), with r̂ = β·Δ. Chen et al. 2024,
    "Noise Contrastive Alignment of Language Models with Explicit Rewards", NCA loss for K = 2 responses
    (§3). It scores each response's absolute likelihood against the reference, so unlike DPO it cannot
    lower log π(y_w) while widening the margin.
    """
    chosen_rewards = beta * _logratio(policy_chosen_logps, ref_chosen_logps)
    rejected_rewards = beta * _logratio(policy_rejected_logps, ref_rejected_logps)
    loss = (
        -F.logsigmoid(chosen_rewards)
        - 0.5 * F.logsigmoid(-chosen_rewards)
        - 0.5 * F.logsigmoid(-rejected_rewards)
    )
    return loss, _reward_metrics(chosen_rewards, rejected_rewards)


@register_preference_loss("bco_pair")
def bco_pair_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    reward_shift: float | torch.Tensor = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BCO for pairs: a binary classifier whose logit is the implicit reward, chosen → 1, rejected → 0:
    −log σ(r̂_w − δ) − log σ(−(r̂_l − δ)), r̂ = β·Δ. Jung et al. 2024, "Binary Classifier Optimization
    for Large Language Model Alignment", the BCO loss (§3) with reward shift δ.

    δ is the paper's running mean of the rewards; this pure function takes it as ``reward_shift`` (the
    caller keeps the running mean, detached). δ = 0 is TRL's ``bco_pair``.
    """
    chosen_rewards = beta * _logratio(policy_chosen_logps, ref_chosen_logps)
    rejected_rewards = beta * _logratio(policy_rejected_logps, ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - reward_shift) - F.logsigmoid(-(rejected_rewards - reward_shift))
    return loss, _reward_metrics(chosen_rewards, rejected_rewards)


@register_preference_loss("sppo_hard")
def sppo_hard_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SPPO with hard win probabilities: (Δ_w − 1/(2β))² + (Δ_l + 1/(2β))².

    Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment", Eq. 4.7 (Algorithm 1):
    (log π/π_t − η·(P̂(y ≻ π_t) − ½))², here with P̂ = 1 for the winner, 0 for the loser, π_ref as π_t
    and η = 1/β.
    """
    chosen_logratio = _logratio(policy_chosen_logps, ref_chosen_logps)
    rejected_logratio = _logratio(policy_rejected_logps, ref_rejected_logps)
    half_eta = 0.5 / beta
    loss = (chosen_logratio - half_eta) ** 2 + (rejected_logratio + half_eta) ** 2
    return loss, _reward_metrics(beta * chosen_logratio, beta * rejected_logratio)


@register_preference_loss("apo_zero")
def apo_zero_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """APO-zero: push the chosen likelihood up and the rejected down, each anchored at the reference,
    (1 − σ(r̂_w)) + σ(r̂_l), r̂ = β·Δ. D'Oosterlinck et al. 2024, "Anchored Preference Optimization and
    Contrastive Revisions", Eq. 7. Use when the chosen responses are better than the model's own.
    """
    chosen_rewards = beta * _logratio(policy_chosen_logps, ref_chosen_logps)
    rejected_rewards = beta * _logratio(policy_rejected_logps, ref_rejected_logps)
    loss = (1.0 - torch.sigmoid(chosen_rewards)) + torch.sigmoid(rejected_rewards)
    return loss, _reward_metrics(chosen_rewards, rejected_rewards)


@register_preference_loss("apo_down")
def apo_down_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """APO-down: push both likelihoods down, the rejected more, σ(r̂_w) + (1 − σ(r̂_w − r̂_l)), r̂ = β·Δ.
    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions", Eq. 8. Use when
    the model is already better than the chosen responses.
    """
    chosen_rewards = beta * _logratio(policy_chosen_logps, ref_chosen_logps)
    rejected_rewards = beta * _logratio(policy_rejected_logps, ref_rejected_logps)
    loss = torch.sigmoid(chosen_rewards) + (1.0 - torch.sigmoid(chosen_rewards - rejected_rewards))
    return loss, _reward_metrics(chosen_rewards, rejected_rewards)


# The reference-free losses and the NLL term (NLL, RPO, SimPO, ORPO, CPO) live in losses/reference_free.py;
# importing it registers them, so every loss is in PREFERENCE_LOSSES once this module is imported.
from tether.losses import reference_free  # noqa: E402, F401
