"""The actor's loss the policy-gradient algorithms share (PPO, REINFORCE, RLOO, GRPO and their variants):
the clipped surrogate, the entropy bonus, β·KL as a loss term, and the items a minibatch's mean is over.
Each piece's equation and its expected-gradient test live with ``losses/policy.py``."""

from __future__ import annotations

import torch

from tether.config import RLConfig
from tether.losses.policy import entropy_bonus, kl_penalty_loss, ppo_clip_loss
from tether.rollout.experience import Experience


def loss_items(minibatch: Experience, config: RLConfig) -> float:
    """The items a policy loss aggregated by ``loss_agg`` averages over: response tokens for
    ``token_mean``, responses with at least one token for the sequence means."""
    mask = minibatch.response_mask
    if config.loss_agg == "token_mean":
        return float(mask.sum())
    return float((mask.sum(-1) > 0).sum())


def kl_loss_term(
    out: dict, minibatch: Experience, config: RLConfig, kl_coef: float
) -> tuple[torch.Tensor, dict]:
    """β·KL(π_θ ‖ π_ref) as a loss term (when it is not in the reward), whose expected gradient is
    β·∇KL(π_θ ‖ π_ref) for each estimator (``kl_penalty_loss``), aggregated as the policy loss; else 0."""
    if config.kl_in_reward or kl_coef == 0:
        return torch.zeros(()), {}
    term, metrics = kl_penalty_loss(
        out["logprobs"], minibatch.ref_logprobs, minibatch.response_mask, config.kl_estimator, config.loss_agg
    )
    return kl_coef * term, metrics


def clipped_policy_loss(
    out: dict, minibatch: Experience, config: RLConfig, kl_coef: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The actor's loss every policy-gradient algorithm shares: PPO's clipped surrogate −min(ρÂ, clip(ρ)Â)
    (plain REINFORCE when ρ = 1, on-policy), − ent_coef·entropy, + β·KL when KL is a loss term."""
    policy_loss, metrics = ppo_clip_loss(
        out["logprobs"],
        minibatch.old_logprobs,
        minibatch.advantages,
        minibatch.response_mask,
        config.clip_eps,
        loss_agg=config.loss_agg,
    )
    return regularised(policy_loss, metrics, out, minibatch, config, kl_coef)


def regularised(
    policy_loss: torch.Tensor,
    metrics: dict[str, torch.Tensor],
    out: dict,
    minibatch: Experience,
    config: RLConfig,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A policy loss − ent_coef·entropy (per-state entropy bonus) + β·KL when KL is a loss term."""
    entropy_loss, entropy_metrics = entropy_bonus(out["entropy"], minibatch.response_mask, config.loss_agg)
    kl_term, kl_metrics = kl_loss_term(out, minibatch, config, kl_coef)
    metrics.update(entropy_metrics)
    metrics.update(kl_metrics)
    metrics["policy/loss"] = policy_loss.detach()
    if config.ent_coef:  # (0 · entropy would still send a backward pass through the entropy)
        policy_loss = policy_loss + config.ent_coef * entropy_loss
    return policy_loss + kl_term, metrics
