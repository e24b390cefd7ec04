"""The DPO family's reference-free losses and its NLL term: NLL, RPO (DPO + NLL), SimPO, ORPO and CPO,
registered in ``losses/preference.py``'s ``PREFERENCE_LOSSES`` under the same keyword-tensor convention
(see that module's docstring). They use the length-normalised log-likelihood log π_θ(y|x) / |y| where the
paper does, and no reference model (RPO's DPO term aside).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tether.losses.preference import _per_token, _reward_metrics, dpo_loss, register_preference_loss


def _chosen_nll(policy_chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """−log π_θ(y_w|x) / |y_w| (B,): the per-token negative log-likelihood of the chosen response."""
    return -_per_token(policy_chosen_logps, chosen_lengths)


@register_preference_loss("nll")
def nll_loss(
    *, policy_chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Length-normalised NLL of the chosen response, −log π_θ(y_w|x) / |y_w|: the SFT term that RPO, CPO
    and ORPO add to keep the chosen likelihood from falling. Pang et al. 2024, "Iterative Reasoning
    Preference Optimization", Eq. 1 (the L_NLL term). Combine it with any loss through
    ``combined_preference_loss`` (TRL's ``rpo_alpha``).
    """
    loss = _chosen_nll(policy_chosen_logps, chosen_lengths)
    return loss, {"nll": loss.detach().mean()}


@register_preference_loss("rpo")
def rpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    rpo_alpha: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RPO (DPO + NLL): −log σ(β·(Δ_w − Δ_l)) − α·log π_θ(y_w|x) / |y_w|. Pang et al. 2024, "Iterative
    Reasoning Preference Optimization", Eq. 1, with α weighting the NLL term (α = 1 in the paper).
    """
    dpo, metrics = dpo_loss(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
        beta=beta,
    )
    nll = _chosen_nll(policy_chosen_logps, chosen_lengths)
    return dpo + rpo_alpha * nll, {**metrics, "nll": nll.detach().mean()}


@register_preference_loss("simpo")
def simpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float = 2.0,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO: reference-free, the reward is the length-normalised log-likelihood r = (β/|y|)·log π_θ(y|x),
    and the pair must be won by a target margin γ: −log σ(r_w − r_l − γ). Meng, Xia & Chen 2024, "SimPO:
    Simple Preference Optimization with a Reference-Free Reward", Eq. 6 (reward Eq. 4).

    ``gamma`` is the margin itself, as in the paper (TRL's ``simpo_gamma`` is γ too; its code divides by β
    and multiplies back). The paper's settings are around β = 2–2.5, γ/β ≈ 0.5.
    """
    chosen_rewards = beta * _per_token(policy_chosen_logps, chosen_lengths)  # (B,)
    rejected_rewards = beta * _per_token(policy_rejected_logps, rejected_lengths)  # (B,)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return loss, _reward_metrics(chosen_rewards, rejected_rewards)


def _log_odds(mean_logps: torch.Tensor) -> torch.Tensor:
    """log(p / (1 − p)) for p = exp(mean_logps) (B,); log(1 − p) as log(−expm1(·)) for accuracy near p = 1.

    p = 1 exactly would give infinite odds, so the mean log-prob is capped just below 0.
    """
    mean_logps = mean_logps.clamp(max=-1e-6)
    return mean_logps - torch.log(-torch.expm1(mean_logps))


@register_preference_loss("orpo")
def orpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    orpo_lambda: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ORPO: SFT on the chosen response plus an odds-ratio penalty, L_SFT + λ·L_OR, where
    L_OR = −log σ(log odds(y_w|x) − log odds(y_l|x)), odds(y|x) = P/(1 − P) and P = exp of the per-token
    mean log-prob. Hong, Lee & Thorne 2024, "ORPO: Monolithic Preference Optimization without Reference
    Model", Eq. 6 (L_ORPO), Eq. 7 (L_OR), Eq. 4 (odds). λ is TRL's ``beta`` for ORPO.

    Reference-free, so ``rewards/*`` report the per-token mean log-probs.
    """
    chosen_mean_logps = _per_token(policy_chosen_logps, chosen_lengths)  # (B,)
    rejected_mean_logps = _per_token(policy_rejected_logps, rejected_lengths)  # (B,)
    log_odds_ratio = _log_odds(chosen_mean_logps) - _log_odds(rejected_mean_logps)
    odds_ratio_loss = -F.logsigmoid(log_odds_ratio)
    nll = -chosen_mean_logps
    loss = nll + orpo_lambda * odds_ratio_loss
    metrics = _reward_metrics(chosen_mean_logps, rejected_mean_logps)
    metrics.update({"log_odds_ratio": log_odds_ratio.detach().mean(), "nll": nll.detach().mean()})
    return loss, metrics


@register_preference_loss("cpo")
def cpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CPO: DPO with a uniform reference plus NLL on the chosen response,
    −log σ(β·log π_θ(y_w|x) − β·log π_θ(y_l|x)) − log π_θ(y_w|x) / |y_w|. Xu et al. 2024, "Contrastive
    Preference Optimization: Pushing the Boundaries of LLM Performance in Machine Translation", Eq. 3
    (L_prefer) plus the L_NLL regulariser of §3; the NLL is length-normalised, as TRL's cross-entropy is.
    """
    chosen_rewards = beta * policy_chosen_logps
    rejected_rewards = beta * policy_rejected_logps
    nll = _chosen_nll(policy_chosen_logps, chosen_lengths)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards) + nll
    return loss, {**_reward_metrics(chosen_rewards, rejected_rewards), "nll": nll.detach().mean()}
