"""Recent policy-gradient variants for RL with verifiable rewards: GSPO (sequence-level ratio and clip),
DAPO (decoupled clip, dynamic sampling, token-level aggregation) and truncated importance sampling for
rollouts sampled by another engine.

Letters and conventions as in ``tether.losses.policy``: N rows (B prompts × G samples, a prompt's rows
adjacent), A response tokens, ``response_mask`` (N, A) with 1 = real response token. Losses return
``(loss, metrics)`` with detached metrics; advantages and old/rollout log-probs are constants (detached);
ratios are exp(new − old); inputs are never modified.
"""

from __future__ import annotations

import math

import torch

from tether.losses.policy import _token_mean, aggregate, ppo_clip_loss
from tether.ops import kl_estimate, masked_mean

SEQUENCE_LOSS_AGG = ("seq_mean", "none")
IS_LEVELS = ("token", "sequence")


def _masked_log_ratio(
    logprobs: torch.Tensor, other: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """(logprobs − other) on real tokens, exactly 0 elsewhere (padding never leaks, even if it is ±inf)."""
    return torch.where(response_mask.bool(), logprobs - other, torch.zeros_like(logprobs))


def _sequence_ratio(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    length_normalised: bool = True,
) -> torch.Tensor:
    """GSPO's s_i = exp((1/|y_i|) Σ_t (log π_θ − log π_old)) per response, (N,); 1 for an empty response.
    Not ``length_normalised``: the whole response's ratio π_θ(y_i|x)/π_old(y_i|x) = exp Σ_t (…)."""
    lengths = response_mask.to(logprobs.dtype).sum(-1)
    log_ratio = _masked_log_ratio(logprobs, old_logprobs.detach(), response_mask).sum(-1)
    return torch.exp(log_ratio / lengths.clamp(min=1.0) if length_normalised else log_ratio)


def sequence_advantages(advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """One advantage per response (N,): ``advantages`` itself when it is (N,), else its mean over each row's
    real tokens (the outcome advantage that GRPO-style estimators repeat at every token)."""
    advantages = advantages.detach()
    if advantages.dim() == 1:
        return advantages
    return masked_mean(advantages, response_mask.to(advantages.dtype), dim=-1)


def gspo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_eps: float = 3e-4,
    clip_eps_high: float | None = 4e-4,
    loss_agg: str = "seq_mean",
    length_normalised: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", §4.1: the objective of eq. 5 and its
    ratio s_i): one length-normalised importance ratio per response, clipped per response,

        s_i = (π_θ(y_i|x) / π_old(y_i|x))^{1/|y_i|} = exp((1/|y_i|) Σ_t (log π_θ(y_i,t) − log π_old(y_i,t))),
        ℓ_i = −min(s_i Â_i, clip(s_i, 1 − ε_low, 1 + ε_high) Â_i),

    and the loss is the mean of ℓ_i over the responses that have tokens (the paper's 1/G Σ_i).
    Inside the clip range (or on the side that makes the objective worse) the gradient w.r.t. one token's
    log-prob is ∂ℓ_i/∂log π_θ(y_i,t) = −Â_i s_i / |y_i|: every token of a response gets the same weight.
    When the clipped term is active the response contributes no gradient.

    ``clip_eps`` = ε_low and ``clip_eps_high`` = ε_high (None: = ε_low); the defaults are the paper's 3e-4
    and 4e-4, far below PPO's token-level 0.2 because s_i is a per-token geometric mean.
    advantages: (N,) or (N, A) (then each row's mean over real tokens is used); logprobs, old_logprobs,
    response_mask: (N, A). ``loss_agg``: ``seq_mean`` or ``none`` (the per-response ℓ_i, (N,), 0 for an
    empty response). Metrics: ``policy/clipfrac`` (share of responses whose clipped term is active),
    ``policy/seq_ratio_mean``, ``policy/approx_kl`` (token-level k3 of KL(π_old ‖ π_θ)).

    ``length_normalised=False``: the same objective with the whole response's ratio
    ρ_i = π_θ(y_i|x)/π_old(y_i|x) (no 1/|y_i| power), the per-response clipped surrogate of TRL's
    RLOOTrainer (https://huggingface.co/docs/trl/rloo_trainer); its gradient where unclipped is
    −Â_i ρ_i ∇log π_θ(y_i|x) = −Â_i ρ_i Σ_t ∇log π_θ(y_i,t), REINFORCE's on-policy (ρ = 1), and the clip
    range is PPO's scale (0.2), since ρ_i is a product of token ratios.
    """
    if loss_agg not in SEQUENCE_LOSS_AGG:
        raise ValueError(
            f"unknown loss_agg {loss_agg!r} for a sequence-level loss; choose one of {SEQUENCE_LOSS_AGG}"
        )
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    mask = response_mask.to(logprobs.dtype)
    lengths = mask.sum(-1)  # (N,)
    has_tokens = (lengths > 0).to(logprobs.dtype)
    seq_ratio = _sequence_ratio(logprobs, old_logprobs, response_mask, length_normalised)  # s_i, (N,)
    adv = sequence_advantages(advantages, response_mask).to(logprobs.dtype)
    unclipped = -adv * seq_ratio
    clipped = -adv * torch.clamp(seq_ratio, 1.0 - clip_eps, 1.0 + eps_high)
    per_sequence = torch.maximum(unclipped, clipped) * has_tokens  # −min(sA, clip(s)A)
    loss = masked_mean(per_sequence, has_tokens) if loss_agg == "seq_mean" else per_sequence
    metrics = {
        "policy/clipfrac": masked_mean((clipped > unclipped).float(), has_tokens.float()).detach(),
        "policy/seq_ratio_mean": masked_mean(seq_ratio.detach().float(), has_tokens.float()),
        "policy/approx_kl": _token_mean(kl_estimate(old_logprobs, logprobs, "k3"), response_mask),
    }
    return loss, metrics


def gspo_token_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_eps: float = 3e-4,
    clip_eps_high: float | None = 4e-4,
    loss_agg: str = "seq_mean_token_mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO-token (Zheng et al. 2025, §4.3): GSPO with a per-token advantage Â_i,t, through the ratio

        s_i,t = sg[s_i] · π_θ(y_i,t) / sg[π_θ(y_i,t)]   (sg = stop-gradient),
        ℓ_i,t = −min(s_i,t Â_i,t, clip(s_i,t, 1 − ε_low, 1 + ε_high) Â_i,t),

    averaged per response then over responses (``seq_mean_token_mean``). s_i,t has the value s_i, so the
    clip decision is GSPO's, and ∂ℓ_i,t/∂log π_θ(y_i,t) = −Â_i,t s_i where unclipped; after the 1/|y_i|
    of the token mean, that is GSPO's −Â_i s_i / |y_i| when Â_i,t = Â_i for every t (same loss, same
    gradient). advantages, logprobs, old_logprobs, response_mask: (N, A). Metrics as ``gspo_loss``, with
    ``policy/clipfrac`` over tokens.
    """
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    mask = response_mask.to(logprobs.dtype)
    lengths = mask.sum(-1)
    seq_ratio = _sequence_ratio(logprobs, old_logprobs, response_mask).detach()  # sg[s_i]
    token_ratio = seq_ratio[:, None] * torch.exp(logprobs - logprobs.detach())  # value s_i, gradient s_i
    advantages = advantages.detach()
    unclipped = -advantages * token_ratio
    clipped = -advantages * torch.clamp(token_ratio, 1.0 - clip_eps, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)
    loss = aggregate(per_token, response_mask, loss_agg)
    has_tokens = (lengths > 0).float()
    metrics = {
        "policy/clipfrac": _token_mean((clipped > unclipped).float(), response_mask),
        "policy/seq_ratio_mean": masked_mean(seq_ratio.float(), has_tokens),
        "policy/approx_kl": _token_mean(kl_estimate(old_logprobs, logprobs, "k3"), response_mask),
    }
    return loss, metrics


def dapo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.28,
    loss_agg: str = "token_mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DAPO's policy loss (Yu et al. 2025, "DAPO: an open-source LLM reinforcement learning system at
    scale", eq. 8): PPO's clipped surrogate with a decoupled range ("clip-higher", §3.1) and every token of
    the batch weighted alike ("token-level policy gradient loss", §3.3),

        ℓ = −(1 / Σ_i |o_i|) Σ_i Σ_t min(r_i,t Â_i,t, clip(r_i,t, 1 − ε_low, 1 + ε_high) Â_i,t),

    with the paper's ε_low = 0.2 and ε_high = 0.28. This is ``ppo_clip_loss(clip_eps=ε_low,
    clip_eps_high=ε_high, loss_agg="token_mean")``; eq. 8's other part, dropping groups whose rewards are
    all equal, is ``dynamic_sampling_mask``.
    """
    return ppo_clip_loss(
        logprobs,
        old_logprobs,
        advantages,
        response_mask,
        clip_eps=clip_eps_low,
        clip_eps_high=clip_eps_high,
        loss_agg=loss_agg,
    )


def dynamic_sampling_mask(scores: torch.Tensor, group_size: int, tolerance: float = 0.0) -> torch.Tensor:
    """DAPO's dynamic sampling (Yu et al. 2025, §3.2, the constraint 0 < |{o_i : o_i correct}| < G of
    eq. 8), for any scalar reward: (N,) bool, True for the rows of groups whose G scores are not all equal
    (max − min > ``tolerance``). A group of equal scores has zero group-relative advantage everywhere and
    so no gradient; DAPO drops it and samples more prompts until the batch is full.

    scores: (N,), the G rows of a prompt adjacent; N must be a multiple of ``group_size``.
    """
    if group_size < 1 or scores.shape[0] % group_size:
        raise ValueError(f"{scores.shape[0]} scores do not split into groups of {group_size}")
    groups = scores.detach().reshape(-1, group_size)
    informative = (groups.max(dim=-1).values - groups.min(dim=-1).values) > tolerance  # (B,)
    return informative.repeat_interleave(group_size)


def truncated_importance_weights(
    train_logprobs: torch.Tensor,
    rollout_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    cap: float = 2.0,
    level: str = "token",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Truncated importance-sampling weights for rollouts sampled by another engine (e.g. vLLM) whose
    log-probs differ from the trainer's for the same weights (Yao et al. 2025, "Your efficient RL framework
    secretly brings you off-policy RL training": TIS; truncation as in Ionides 2008, "Truncated importance
    sampling"). With ρ = π_train / π_rollout of the sampled tokens:

    - ``token``:    w_i,t = min(ρ_i,t, C),               ρ_i,t = exp(log π_train(y_i,t) − log π_rollout(y_i,t));
    - ``sequence``: w_i,t = min(Π_t ρ_i,t, C) for every t of row i (the whole response's ratio).

    Multiply the per-token policy loss by w before aggregating (E_rollout[w · ∇ℓ] ≈ E_train[∇ℓ], biased
    only where ρ > C). ``train_logprobs``: the trainer's log-probs of the sampled tokens under the weights
    that sampled them (π_old); ``rollout_logprobs``: the sampler's. Returns detached weights (N, A), 0
    outside the mask, and mismatch metrics: ``mismatch/log_ratio_abs`` (mean |log ρ_t| over real tokens),
    ``mismatch/kl_k3`` (k3 estimate of KL(π_rollout ‖ π_train) per token, from the rollout's own samples),
    ``mismatch/capped_frac`` (share of tokens, or of responses, whose ρ exceeds C) and
    ``mismatch/weight_mean`` (mean weight over real tokens).
    """
    if cap <= 0:
        raise ValueError(f"cap must be positive, got {cap}")
    if level not in IS_LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {IS_LEVELS}")
    train, rollout = train_logprobs.detach().float(), rollout_logprobs.detach().float()
    mask = response_mask.to(train.dtype)
    log_ratio = _masked_log_ratio(train, rollout, response_mask)  # (N, A)
    log_cap = math.log(cap)
    if level == "token":
        weights = torch.exp(torch.clamp(log_ratio, max=log_cap)) * mask
        capped = _token_mean((log_ratio > log_cap).float(), response_mask)
    else:
        sequence_log_ratio = log_ratio.sum(-1)  # log Π_t ρ_t, (N,)
        has_tokens = (mask.sum(-1) > 0).float()
        weights = torch.exp(torch.clamp(sequence_log_ratio, max=log_cap))[:, None] * mask
        capped = masked_mean((sequence_log_ratio > log_cap).float(), has_tokens)
    metrics = {
        "mismatch/log_ratio_abs": _token_mean(log_ratio.abs(), response_mask),
        # k3 with ℓ = log π_rollout − log π_train = −log ρ (0 on padding)
        "mismatch/kl_k3": _token_mean(
            kl_estimate(-log_ratio, torch.zeros_like(log_ratio), "k3"), response_mask
        ),
        "mismatch/capped_frac": capped,
        "mismatch/weight_mean": _token_mean(weights, response_mask),
    }
    return weights, metrics
