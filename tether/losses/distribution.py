"""Distribution-matching losses: DPG (with KL-adaptive proposal updates) and BRAIn.

Letters: N rows (responses), B prompts, G responses per prompt (``group_size``), N = B·G.

Both losses fit the policy π_θ to one fixed target instead of maximising a reward:

    p*(y|x) = P(y|x) / Z(x),    P(y|x) = π_ref(y|x)·exp(r(x, y)/β),    Z(x) = Σ_y P(y|x),

the optimum of the KL-regularised objective E_π[r] − β·KL(π ‖ π_ref) (Korbak, Perez & Buckley 2022,
"RL with KL penalties is better viewed as Bayesian inference"; Rafailov et al. 2023 eq. 4). P is the
unnormalised target (an energy-based model, in the words of Khalifa et al. 2021): it can be evaluated on any
response but not sampled, and Z is unknown. Responses y_1..y_G for one prompt are drawn from a proposal q —
π_θ itself, detached (on-policy), or an older copy of it, or π_ref (offline) — and reweighted by

    log w_i = log P(y_i) − log q(y_i) = log π_ref(y_i) + r_i/β − log q(y_i),
    w̃_i    = w_i / Σ_j w_j = softmax_j(log w_j)_i           (self-normalised within the group),

computed in log space so no exp(r/β) overflows. Self-normalising cancels the unknown Z (Ẑ = mean_i w_i
estimates it), at the price of an O(1/G) bias. The weights are constants (detached).

Inputs, all (N,), summed over response tokens (e.g. ``masked_sum(token_logprobs, response_mask, dim=-1)``):
``policy_logprobs`` log π_θ(y|x) with gradient; ``proposal_logprobs`` log q(y|x) of whatever the responses
were sampled from; ``ref_logprobs`` log π_ref(y|x); ``rewards`` r(x, y). Rows are grouped by prompt in
consecutive blocks of ``group_size``; ``group_size=None`` treats the whole batch as one group (one prompt, or a
batch-level normaliser as in the original DPG).

Each loss returns ``(per_row_loss (N,), metrics)``. A group's rows sum to that prompt's estimate, so reduce with
``loss.sum() / B`` (= ``loss.mean() · G``), not a plain mean. Metrics are detached scalars, averaged over groups:
``distribution/ess`` (effective sample size 1/Σ w̃², Kong 1992) and ``distribution/ess_fraction`` (ESS / G, 1 =
proposal equals target), ``distribution/max_weight`` (largest w̃), ``distribution/log_partition`` (log Ẑ),
``distribution/kl_target_policy`` (the self-normalised estimate of KL(p* ‖ π_θ), see
``estimate_divergences``). Inputs are never modified.

Off-policy DPG keeps q fixed and swaps in a copy of π_θ only when π_θ is estimated to be closer to p*:
``estimate_divergences`` gives the importance-sampling estimates of KL / TVD, ``should_update_proposal`` the
rule (Khalifa et al. 2021, Algorithm 1).
"""

from __future__ import annotations

import math

import torch

DIVERGENCE_CRITERIA = ("kl", "tvd")


def _fp32_at_least(values: torch.Tensor) -> torch.Tensor:
    return values if values.dtype == torch.float64 else values.float()


def _grouped(values: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """(N,) → (B, G): consecutive blocks of ``group_size`` rows share one prompt."""
    if values.dim() != 1:
        raise ValueError(f"expected sequence-level values of shape (N,), got {tuple(values.shape)}")
    num_rows = values.shape[0]
    size = num_rows if group_size is None else group_size
    if size <= 0 or num_rows % size != 0:
        raise ValueError(
            f"group_size={group_size} must be positive and divide the number of rows ({num_rows})"
        )
    return values.reshape(num_rows // size, size)


def _check_beta(beta: float) -> None:
    if not beta > 0.0:
        raise ValueError(f"beta must be positive, got {beta}")


def log_importance_weights(
    proposal_logprobs: torch.Tensor, ref_logprobs: torch.Tensor, rewards: torch.Tensor, beta: float
) -> torch.Tensor:
    """log w = log P(y) − log q(y) = log π_ref(y) + r/β − log q(y), shape (N,), detached, at least fp32."""
    _check_beta(beta)
    ref = _fp32_at_least(ref_logprobs.detach())
    return ref + _fp32_at_least(rewards.detach()) / beta - _fp32_at_least(proposal_logprobs.detach())


def self_normalised_weights(log_weights: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
    """w̃_i = w_i / Σ_{j in i's group} w_j = softmax of the log-weights within each group, shape (N,), detached."""
    return torch.softmax(_grouped(log_weights.detach(), group_size), dim=-1).reshape(-1)


def _weight_metrics(
    log_weights: torch.Tensor,
    policy_logprobs: torch.Tensor,
    proposal_logprobs: torch.Tensor,
    group_size: int | None,
) -> dict[str, torch.Tensor]:
    """ESS, largest weight, log Ẑ and the SNIS estimate of KL(p* ‖ π_θ), each averaged over groups."""
    with torch.no_grad():
        log_w = _grouped(log_weights, group_size)  # (B, G)
        weights = torch.softmax(log_w, dim=-1)  # (B, G)
        group = log_w.shape[-1]
        ess = 1.0 / (weights**2).sum(dim=-1)  # (B,)
        divergences = _divergences(log_weights, policy_logprobs, proposal_logprobs, group_size)
        return {
            "distribution/ess": ess.mean(),
            "distribution/ess_fraction": (ess / group).mean(),
            "distribution/max_weight": weights.max(dim=-1).values.mean(),
            "distribution/log_partition": (torch.logsumexp(log_w, dim=-1) - math.log(group)).mean(),
            "distribution/kl_target_policy": divergences["kl_target_policy"],
        }


def dpg_loss(
    policy_logprobs: torch.Tensor,
    proposal_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    beta: float,
    group_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Distributional Policy Gradient: minimise the cross-entropy CE(p*, π_θ) = −E_{p*}[log π_θ(y)], whose
    minimiser over all distributions is π_θ = p* (and whose gradient equals that of KL(p* ‖ π_θ)).

    Parshakova, Andreoli & Dymetman 2019 ("Distributional reinforcement learning for energy-based sequential
    models") and Khalifa, Elsahar & Dymetman 2021 ("A distributional approach to controlled text generation",
    ICLR, Algorithm 1, KL-adaptive DPG) sample from a proposal q and move θ along

        ∇_θ CE(p*, π_θ) = −E_{y~p*} ∇ log π_θ(y) = −(1/Z) E_{y~q} [P(y)/q(y) · ∇ log π_θ(y)],

    an importance-weighted REINFORCE with "reward" P(y)/q(y). Here Z is replaced by its importance-sampling
    estimate Ẑ = mean_i P(y_i)/q(y_i) within each prompt's group, i.e. the weights are self-normalised:

        ℓ_i = −w̃_i · log π_θ(y_i),    w̃_i = softmax_j(log π_ref(y_j) + r_j/β − log q(y_j))_i,

    so Σ_{i in group} ℓ_i is the self-normalised estimate of CE(p*, π_θ) for that prompt and its gradient is
    −Σ_i w̃_i ∇ log π_θ(y_i). At π_θ = q = p* all w̃_i = 1/G and the expected gradient is zero: p* is the fixed
    point. Off-policy, q stays fixed until ``should_update_proposal`` says π_θ has become the better proposal.

    This is DPG without a baseline; Korbak et al. 2022 ("On reinforcement learning and distribution matching
    for fine-tuning language models with no catastrophic forgetting", GDC++) subtract Z·π_θ(y)/q(y), and
    ``brain_loss`` subtracts its self-normalised version.

    Shapes: all inputs (N,); returns per-row loss (N,) — reduce with ``loss.sum() / B`` — and the metrics in
    the module docstring plus ``policy/logprob_mean``.
    """
    log_weights = log_importance_weights(proposal_logprobs, ref_logprobs, rewards, beta)  # (N,)
    weights = self_normalised_weights(log_weights, group_size)  # (N,)
    loss = -weights.to(policy_logprobs.dtype) * policy_logprobs
    metrics = _weight_metrics(log_weights, policy_logprobs, proposal_logprobs, group_size)
    metrics["policy/logprob_mean"] = policy_logprobs.detach().float().mean()
    return loss, metrics


def brain_loss(
    policy_logprobs: torch.Tensor,
    proposal_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    beta: float,
    group_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BRAIn: distil the reward-conditioned posterior into π_θ with self-normalised importance sampling and a
    self-normalised baseline (Pandey et al. 2024, "BRAIn: Bayesian reward-conditioned amortized inference for
    natural language generation from feedback", ICML, arXiv:2402.02479, §4).

    The target is the posterior p(y|x, G=1) ∝ p(y|x)·p(G=1|y, x) of the SFT prior given that the output is
    good; taking p(G=1|y, x) ∝ exp(r(x, y)/β) makes it p* above (§5 relates the posterior to PPO's optimal
    policy under a Bradley–Terry reward model). For G samples
    y_i ~ q of one prompt, BRAIn self-normalises two sets of weights,

        α̂_i = softmax_j(log π_ref(y_j) + r_j/β − log q(y_j))_i      (posterior / proposal; detached),
        β̂_i = softmax_j(log π_θ(y_j) − log q(y_j))_i                 (policy / proposal; keeps its gradient),

    and descends −Σ_i (α̂_i − β̂_i) ∇ log π_θ(y_i): the DPG gradient −Σ α̂_i ∇ log π_θ(y_i) minus the
    self-normalised estimate Σ β̂_i ∇ log π_θ(y_i) of E_{π_θ}[∇ log π_θ] = 0, a baseline that cuts the variance
    when q is far from p* (the authors' gradient_estimators.py compares DPG, GDC++ and BRAIn in exactly this
    form). That gradient is the exact gradient of the cross-entropy between the two normalised weight vectors,

        ℓ = −Σ_i α̂_i · log β̂_i,      ∇ℓ = −Σ_i α̂_i (∇ log π_θ(y_i) − Σ_j β̂_j ∇ log π_θ(y_j))
                                          = −Σ_i (α̂_i − β̂_i) ∇ log π_θ(y_i),

    which differs from KL(α̂ ‖ β̂) = Σ α̂_i log(α̂_i/β̂_i) only by the entropy of α̂, a constant in θ. By the
    paper's Theorem 4.2 this gradient is a biased estimate of ∇KL(p* ‖ π_θ) but an unbiased one of the gradient
    of a "self-normalised KL" between p* and π_θ, which is zero iff π_θ = p*. With G = 2, q = π_ref and α̂
    hardened to the argmax of the reward, ℓ is the DPO loss −log σ(Δ_w − Δ_l) with β = 1 (the paper's
    "DPO-sft" special case, §5; checked in the tests).

    Per row ℓ_i = −α̂_i · log β̂_i (N,) — reduce with ``loss.sum() / B``. Metrics: those of the module docstring
    (of α̂), ``distribution/self_normalised_kl`` (mean over groups of KL(α̂ ‖ β̂)), ``distribution/policy_ess``
    (ESS of β̂) and ``policy/logprob_mean``.
    """
    log_weights = log_importance_weights(proposal_logprobs, ref_logprobs, rewards, beta)  # (N,)
    target_weights = self_normalised_weights(log_weights, group_size)  # (N,) α̂
    policy = _fp32_at_least(policy_logprobs)
    policy_log_weights = _grouped(policy - _fp32_at_least(proposal_logprobs.detach()), group_size)  # (B, G)
    log_policy_weights = torch.log_softmax(policy_log_weights, dim=-1).reshape(-1)  # (N,) log β̂
    loss = (-target_weights * log_policy_weights).to(policy_logprobs.dtype)

    metrics = _weight_metrics(log_weights, policy_logprobs, proposal_logprobs, group_size)
    with torch.no_grad():
        log_target = torch.log_softmax(_grouped(log_weights, group_size), dim=-1)  # (B, G) log α̂
        log_policy = _grouped(log_policy_weights.detach(), group_size)  # (B, G) log β̂
        alpha = log_target.exp()
        metrics["distribution/self_normalised_kl"] = (alpha * (log_target - log_policy)).sum(dim=-1).mean()
        metrics["distribution/policy_ess"] = (1.0 / (log_policy.exp() ** 2).sum(dim=-1)).mean()
        metrics["policy/logprob_mean"] = policy_logprobs.detach().float().mean()
    return loss, metrics


def _divergences(
    log_weights: torch.Tensor,
    policy_logprobs: torch.Tensor,
    proposal_logprobs: torch.Tensor,
    group_size: int | None,
) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        log_w = _grouped(_fp32_at_least(log_weights.detach()), group_size)  # (B, G) log P/q
        log_policy_ratio = _grouped(
            _fp32_at_least(policy_logprobs.detach()) - _fp32_at_least(proposal_logprobs.detach()), group_size
        )  # (B, G) log π_θ/q
        log_z = torch.logsumexp(log_w, dim=-1, keepdim=True) - math.log(log_w.shape[-1])  # (B, 1) log Ẑ
        weights = torch.softmax(log_w, dim=-1)  # (B, G) w̃
        log_target_ratio = log_w - log_z  # (B, G) log p*/q ≈ log(P/(Ẑ q))
        return {
            "kl_target_proposal": (weights * log_target_ratio).sum(dim=-1).mean(),
            "kl_target_policy": (weights * (log_target_ratio - log_policy_ratio)).sum(dim=-1).mean(),
            "tvd_target_proposal": 0.5 * (1.0 - log_target_ratio.exp()).abs().mean(dim=-1).mean(),
            "tvd_target_policy": 0.5
            * (log_policy_ratio.exp() - log_target_ratio.exp()).abs().mean(dim=-1).mean(),
        }


def estimate_divergences(
    policy_logprobs: torch.Tensor,
    proposal_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    beta: float,
    group_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Importance-sampling estimates of how far the proposal q and the policy π_θ are from p*, from samples of q.

    With w_i = P(y_i)/q(y_i), Ẑ = mean_i w_i per group and p*(y_i)/q(y_i) ≈ w_i/Ẑ = G·w̃_i — the estimators the
    GDC / GDC++ reference code uses to compare π_θ and q (github.com/naver/gdc, ``compute_kl``,
    ``compute_tvd_p_q``, ``compute_tvd_p_pi``; Khalifa et al. 2021; Korbak et al. 2022):

        KL(p* ‖ q)   = −log Z + (1/Z) E_q[(P/q) log(P/q)]      ≈ Σ_i w̃_i log(w_i/Ẑ),
        KL(p* ‖ π_θ) = −log Z + (1/Z) E_q[(P/q) log(P/π_θ)]    ≈ Σ_i w̃_i (log(w_i/Ẑ) − log(π_θ(y_i)/q(y_i))),
        TVD(p*, q)   = ½ E_q |1 − P/(Z q)|                      ≈ ½ mean_i |1 − w_i/Ẑ|,
        TVD(p*, π_θ) = ½ E_q |π_θ/q − P/(Z q)|                  ≈ ½ mean_i |π_θ(y_i)/q(y_i) − w_i/Ẑ|,

    each averaged over groups (prompts). Finite-sample estimates: a KL can come out negative on few samples.
    Inputs (N,) as for ``dpg_loss``; returns detached scalars under ``kl_target_proposal``,
    ``kl_target_policy``, ``tvd_target_proposal``, ``tvd_target_policy``.
    """
    log_weights = log_importance_weights(proposal_logprobs, ref_logprobs, rewards, beta)
    return _divergences(log_weights, policy_logprobs, proposal_logprobs, group_size)


def should_update_proposal(
    policy_logprobs: torch.Tensor,
    proposal_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    beta: float,
    group_size: int | None = None,
    criterion: str = "kl",
    best_divergence: float | None = None,
) -> tuple[bool, dict[str, torch.Tensor]]:
    """The proposal-update rule of off-policy (KL-adaptive) DPG: replace q by a copy of π_θ when π_θ is the
    closer of the two to p*.

    Khalifa et al. 2021, Algorithm 1 (KL-adaptive DPG): after a round of updates, "if D_KL(p ‖ π_θ) <
    D_KL(p ‖ q) then q ← π_θ". The GDC++ code of Korbak et al. 2022 (github.com/naver/gdc,
    ``q_update_criterion``) also allows the total variation distance; ``criterion`` picks ``"kl"`` or
    ``"tvd"``. Both divergences are estimated by ``estimate_divergences`` from responses sampled from the
    current q — best a fresh batch, not the one just trained on, drawn every few steps.

    ``best_divergence``, when given, is the D(p*, π_θ) at which q was last replaced; π_θ must then beat it too
    (the reference code's ``use_all_previous``), so q only ever moves to a policy better than every earlier
    proposal.

    A better proposal gives flatter weights (higher ESS), so the DPG gradient's variance falls as π_θ approaches
    p*; keeping q fixed otherwise stops a bad update from feeding itself its own samples.

    Returns ``(update, divergences)``: ``update`` is a Python bool (True → copy π_θ's parameters into q and
    keep ``divergences[f"{criterion}_target_policy"]`` as the next ``best_divergence``); ``divergences`` holds
    the four detached estimates. Inputs (N,) as for ``dpg_loss``.
    """
    if criterion not in DIVERGENCE_CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {DIVERGENCE_CRITERIA}")
    divergences = estimate_divergences(
        policy_logprobs, proposal_logprobs, ref_logprobs, rewards, beta, group_size=group_size
    )
    policy_divergence = divergences[f"{criterion}_target_policy"].item()
    proposal_divergence = divergences[f"{criterion}_target_proposal"].item()
    update = policy_divergence < proposal_divergence
    if best_divergence is not None:
        update = update and policy_divergence < best_divergence
    return update, divergences
