"""Policy-gradient losses: REINFORCE, importance-weighted REINFORCE, PPO-clip, the value loss, the
entropy bonus and the KL penalty as a loss term.

Letters: N rows (responses), A response (action) tokens. Every loss takes per-token tensors (N, A) and a
``response_mask`` (N, A) with 1 = real response token, and reduces them with an explicit ``loss_agg``:

- ``token_mean``          Σ_{i,t} ℓ_it m_it / Σ_{i,t} m_it — every token weighs the same (PPO, DAPO);
- ``seq_mean_token_sum``  mean over responses of Σ_t ℓ_it m_it — Dr. GRPO (Liu et al. 2025);
- ``seq_mean_token_mean`` mean over responses of the per-response token mean — GRPO as first written
  (Shao et al. 2024 eq. 3);
- ``none``                the per-token losses (N, A), 0 outside the mask, for the caller to reduce.

Each returns ``(loss, metrics)``: ``metrics`` maps the shared metric keys (``policy/clipfrac``, …) to
detached scalars, averaged over real tokens whatever ``loss_agg`` is. Advantages, returns and old
log-probs are treated as constants (detached); inputs are never modified. Ratios are exp(new − old).
"""

from __future__ import annotations

import torch

from tether.ops import kl_estimate, masked_mean, masked_sum, masked_var

LOSS_AGG_MODES = ("token_mean", "seq_mean_token_sum", "seq_mean_token_mean", "none")


def aggregate(
    per_token: torch.Tensor, response_mask: torch.Tensor, loss_agg: str = "token_mean"
) -> torch.Tensor:
    """Reduce per-token losses (N, A) under ``response_mask`` (N, A) to a scalar, by ``loss_agg``.

    The sequence means average over responses with at least one real token (an empty row neither
    contributes nor dilutes). ``loss_agg="none"`` returns per_token·mask, shape (N, A).
    """
    mask = response_mask.to(per_token.dtype)
    if loss_agg == "token_mean":
        return masked_mean(per_token, mask)
    if loss_agg == "none":
        return per_token * mask
    if loss_agg not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_agg {loss_agg!r}; choose one of {LOSS_AGG_MODES}")
    has_tokens = (mask.sum(dim=-1) > 0).to(per_token.dtype)  # (N,)
    if loss_agg == "seq_mean_token_sum":
        per_sequence = masked_sum(per_token, mask, dim=-1)  # (N,)
    else:
        per_sequence = masked_mean(per_token, mask, dim=-1)  # (N,)
    return masked_mean(per_sequence, has_tokens)


def _token_mean(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    return masked_mean(values.detach().float(), response_mask)


def reinforce_loss(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg: str = "token_mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE (Williams 1992, "Simple statistical gradient-following algorithms for connectionist
    reinforcement learning": Δw = α (r − b) ∂ ln π / ∂w), per token:

        ℓ_t = −Â_t · log π_θ(a_t | s_t),

    whose gradient is −Â_t ∇ log π_θ(a_t | s_t), the log-derivative (score-function) estimate of −∇J.
    Â_t is any advantage from ``tether.advantages`` (reward-to-go, a baselined return, GAE, …); the
    samples must come from π_θ itself (on-policy). logprobs, advantages, response_mask: (N, A).
    """
    per_token = -advantages.detach() * logprobs
    loss = aggregate(per_token, response_mask, loss_agg)
    metrics = {
        "policy/advantage_mean": _token_mean(advantages, response_mask),
        "policy/logprob_mean": _token_mean(logprobs, response_mask),
    }
    return loss, metrics


def importance_weighted_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg: str = "token_mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE with importance weights, for samples drawn from an older policy π_old (the surrogate
    L^CPI of Schulman et al. 2017, "Proximal policy optimization algorithms", eq. 6; Kakade & Langford
    2002), per token:

        ℓ_t = −ρ_t Â_t,    ρ_t = π_θ(a_t | s_t) / π_old(a_t | s_t) = exp(log π_θ − log π_old).

    Its gradient −ρ_t Â_t ∇ log π_θ equals REINFORCE's at ρ = 1. Unbounded ρ makes it unstable; see
    ``ppo_clip_loss``. logprobs, old_logprobs, advantages, response_mask: (N, A).
    """
    log_ratio = logprobs - old_logprobs.detach()
    ratio = torch.exp(log_ratio)
    per_token = -advantages.detach() * ratio
    loss = aggregate(per_token, response_mask, loss_agg)
    metrics = {
        "policy/ratio_mean": _token_mean(ratio, response_mask),
        "policy/approx_kl": _token_mean(kl_estimate(old_logprobs, logprobs, "k3"), response_mask),
    }
    return loss, metrics


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    dual_clip: float | None = None,
    loss_agg: str = "token_mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, "Proximal policy optimization algorithms", eq. 7),
    per token, as a loss to minimise:

        ℓ_t = −min(ρ_t Â_t, clip(ρ_t, 1 − ε, 1 + ε) Â_t),    ρ_t = exp(log π_θ − log π_old).

    For Â > 0 this caps ρ at 1 + ε (no gain, hence zero gradient, from raising π further); for Â < 0 it
    floors ρ at 1 − ε. Inside the range, or on the side that makes the objective worse, the gradient
    w.r.t. log π_θ(a_t) is −ρ_t Â_t, as for ``importance_weighted_loss``.

    ``clip_eps_high`` sets a different upper bound 1 + ε_high ("clip-higher", Yu et al. 2025, DAPO).
    ``dual_clip`` c > 1 also bounds the loss of a negative-advantage token by −c·Â_t, so a huge ρ on a bad
    token cannot dominate (dual-clip PPO, Ye et al. 2020, "Mastering complex control in MOBA games with deep RL"):
    ℓ_t = min(ℓ_t, −c Â_t) where Â_t < 0.

    logprobs, old_logprobs, advantages, response_mask: (N, A). Metrics: ``policy/clipfrac`` (share of real
    tokens whose clipped term is active, i.e. whose gradient is zero), ``policy/approx_kl`` (k3 estimate of
    KL(π_old ‖ π_θ) on the old samples, Schulman 2020), ``policy/ratio_mean``, and with dual clip
    ``policy/dual_clipfrac``.
    """
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    advantages = advantages.detach()
    log_ratio = logprobs - old_logprobs.detach()
    ratio = torch.exp(log_ratio)  # (N, A)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)  # −min(ρA, clip(ρ)A)
    metrics = {
        "policy/clipfrac": _token_mean((clipped > unclipped).float(), response_mask),
        "policy/approx_kl": _token_mean(kl_estimate(old_logprobs, logprobs, "k3"), response_mask),
        "policy/ratio_mean": _token_mean(ratio, response_mask),
    }
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be greater than 1, got {dual_clip}")
        bound = -dual_clip * advantages
        dual_active = (advantages < 0) & (per_token > bound)
        per_token = torch.where(dual_active, bound, per_token)
        metrics["policy/dual_clipfrac"] = _token_mean(dual_active.float(), response_mask)
    loss = aggregate(per_token, response_mask, loss_agg)
    return loss, metrics


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    old_values: torch.Tensor | None = None,
    clip_range: float | None = None,
    loss_agg: str = "token_mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Value-head regression to the returns (Schulman et al. 2017 eq. 9, L^VF = (V_θ(s_t) − V_t^targ)²):

        ℓ_t = ½ (V_t − R_t)².

    With ``clip_range`` c and ``old_values``, the PPO2 clipped form (OpenAI baselines ppo2; discussed by
    Engstrom et al. 2020, "Implementation matters in deep policy gradients"): V_t^clip = V_t^old + clip(V_t − V_t^old, −c, c) and ℓ_t = ½ max((V_t − R_t)²,
    (V_t^clip − R_t)²) — the pessimistic of the two, so the value cannot gain by moving more than c from
    the rollout's estimate.

    values, returns, response_mask, old_values: (N, A). Metrics: ``value/clipfrac`` (share of real
    tokens where the clipped term is active), ``value/explained_variance`` = 1 − Var(R − V) / Var(R),
    ``value/mean``.
    """
    returns = returns.detach()
    squared_error = (values - returns) ** 2
    metrics: dict[str, torch.Tensor] = {}
    if clip_range is not None:
        if old_values is None:
            raise ValueError("value_loss with clip_range needs old_values")
        old_values = old_values.detach()
        clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
        clipped_error = (clipped_values - returns) ** 2
        metrics["value/clipfrac"] = _token_mean((clipped_error > squared_error).float(), response_mask)
        squared_error = torch.maximum(squared_error, clipped_error)
    loss = aggregate(0.5 * squared_error, response_mask, loss_agg)
    with torch.no_grad():
        residual_var = masked_var(returns.float() - values.float(), response_mask)
        returns_var = masked_var(returns.float(), response_mask)
        metrics["value/explained_variance"] = 1.0 - residual_var / returns_var.clamp(min=1e-8)
        metrics["value/mean"] = _token_mean(values, response_mask)
    return loss, metrics


def entropy_bonus(
    entropies: torch.Tensor, response_mask: torch.Tensor, loss_agg: str = "token_mean"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The entropy bonus S[π_θ](s_t) of Schulman et al. 2017 eq. 9 (L^{CLIP+VF+S} = L^CLIP − c₁L^VF +
    c₂S), as a loss term: −H(π_θ(· | s_t)) aggregated. Adding c₂ times it to the loss raises entropy,
    keeping the policy exploring (Williams & Peng 1991; Mnih et al. 2016).

    It is the per-state bonus: the sampled states s_t are data, so its expected gradient is
    E_{s ~ d_π}[∇H(π_θ(· | s))] with the state distribution held fixed, not the gradient of the whole
    response's entropy H(π_θ(y | x)) (which would add how earlier tokens change later states;
    tests/algorithms/test_expected_gradients.py checks the per-state form).

    entropies: (N, A) per-token entropies, e.g. ``tether.ops.entropy_from_logits``; response_mask (N, A).
    Metric: ``policy/entropy`` (mean over real tokens).
    """
    loss = aggregate(-entropies, response_mask, loss_agg)
    return loss, {"policy/entropy": _token_mean(entropies, response_mask)}


def _suffix_sum(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Σ_{s ≥ t} values_s·mask_s for every column t: (N, A) -> (N, A)."""
    masked = values * response_mask.to(values.dtype)
    return masked.flip(-1).cumsum(-1).flip(-1)


def kl_penalty_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    estimator: str = "k3",
    loss_agg: str = "seq_mean_token_sum",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KL(π_θ ‖ π_ref) of whole responses as a loss term whose expected gradient, over y ~ π_θ, is
    ∇_θ KL(π_θ ‖ π_ref) for every estimator (exactly so with ``loss_agg="seq_mean_token_sum"``; the other
    modes weigh tokens as the policy loss beside it does).

    Differentiating a per-token estimate k_t alone is not enough (Tang & Munos 2025, "On a few pitfalls in
    KL divergence gradient estimation for RL"): E_π[∇k1_t] = 0 (no regularisation at all), E_π[∇k3_t] is
    the gradient of the *reverse* KL(π_ref ‖ π_θ) at s_t, and even E_π[∇k2_t] is only the gradient at a
    fixed state s_t, missing how earlier tokens change which later states are visited. By the chain rule
    KL(π ‖ π_ref) = E_π[Σ_t KL_t(s_t)], and with ℓ_t = log π_θ(a_t|s_t) − log π_ref(a_t|s_t)

        ∇ KL(π ‖ π_ref) = E_π[Σ_t ∇log π_θ(a_t|s_t) · Σ_{s ≥ t} ℓ_s]        (reward-to-go of the log-ratio).

    Per token the loss is k_t + F_t·(log π_θ − sg(log π_θ)), whose value is the estimate k_t (the second
    term is 0) and whose gradient adds the score-function term F_t ∇log π_θ, sg = stop-gradient:

    - ``k1`` (ℓ): k_t held constant (its own gradient ∇log π_θ has mean 0 and only adds noise),
      F_t = Σ_{s ≥ t} ℓ_s;
    - ``k2`` (ℓ²/2): ∇k2_t = ℓ_t ∇log π_θ is the local term, F_t = Σ_{s > t} ℓ_s the rest;
    - ``k3`` (e^{−ℓ} − 1 + ℓ, unbiased: E_π[k3_t | s_t] = KL_t): ∇E_π[Σ_t k3_t] = E[Σ_t ∇k3_t] +
      E[Σ_t ∇log π_θ(a_t|s_t) Σ_{s ≥ t} k3_s], so F_t = Σ_{s ≥ t} k3_s.

    With k1 the gradient equals that of the KL in the reward (−β·ℓ_t per token) under REINFORCE without a
    baseline; the loss term keeps the KL out of the advantages' baselines and normalisation. Samples from
    an older policy (more than one epoch) use the same form without importance weights, as the clipped
    policy loss does inside its trust region. logprobs, ref_logprobs, response_mask: (N, A). Metric:
    ``kl/loss_term`` (the aggregated estimate).
    """
    mask = response_mask.to(logprobs.dtype)
    ref_logprobs = ref_logprobs.detach()
    estimate = kl_estimate(logprobs, ref_logprobs, estimator)  # (N, A), with gradient
    if estimator == "k1":
        local = estimate.detach()
        future = _suffix_sum(local, mask)
    elif estimator == "k2":
        local = estimate
        log_ratio = (logprobs - ref_logprobs).detach()
        future = _suffix_sum(log_ratio, mask) - log_ratio * mask
    else:
        local = estimate
        future = _suffix_sum(estimate.detach(), mask)
    score_function = logprobs - logprobs.detach()  # 0, with gradient ∇log π_θ
    per_token = local + future * score_function
    loss = aggregate(per_token, mask, loss_agg)
    return loss, {"kl/loss_term": loss.detach()}
