"""PPO for language models, as the lecture builds it up (Schulman et al. 2017; Ziegler et al. 2019;
Ouyang et al. 2022):

- the reward of a response is the reward model's score minus β·KL to the frozen reference, per token;
- a value head — a linear layer on the policy's hidden states — estimates V(s_t) and is trained by MSE to
  the returns;
- advantages Â_t by GAE(γ, λ) from the per-token rewards and values (γ = λ = 1 gives the reward-to-go
  minus the value baseline);
- the samples are reused for K epochs thanks to the importance weight ρ = π_θ/π_old, clipped to
  [1 − ε, 1 + ε] so that one batch cannot move the policy far;
- an optional entropy bonus keeps the policy exploring.

The shared loop (sample → score → reference → shaped reward → update) is in ``online.py``.
"""

from __future__ import annotations

import torch

from tether.advantages import compute_advantages, whiten_advantages
from tether.algorithms.actor_loss import clipped_policy_loss
from tether.algorithms.online import run_online
from tether.config import PPOConfig
from tether.losses.policy import value_loss
from tether.rollout.experience import Experience


def ppo_advantages(experience: Experience, config: PPOConfig) -> None:
    """GAE over the shaped per-token rewards with the value head's estimates; returns = Â + V."""
    advantages, returns = compute_advantages(
        "gae",
        token_rewards=experience.rewards,
        values=experience.values,
        response_mask=experience.response_mask,
        gamma=config.gamma,
        lam=config.lam,
    )
    if config.whiten_advantages:
        advantages = whiten_advantages(advantages, experience.response_mask)
    experience.advantages, experience.returns = advantages, returns


def ppo_loss(
    out: dict, minibatch: Experience, config: PPOConfig, kl_coef: float
) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate − ent_coef · entropy (+ β·KL when it is a loss term) + vf_coef · value MSE."""
    actor_loss, metrics = clipped_policy_loss(out, minibatch, config, kl_coef)
    critic_loss, value_metrics = value_loss(
        out["values"],
        minibatch.returns,
        minibatch.response_mask,
        old_values=minibatch.values,
        clip_range=config.value_clip or None,
        loss_agg=config.loss_agg,
    )
    metrics.update(value_metrics)
    metrics["value/loss"] = critic_loss.detach()
    return actor_loss + config.vf_coef * critic_loss, metrics


def run_ppo(config: PPOConfig) -> dict[str, float]:
    """Run PPO; returns the last iteration's metrics."""
    return run_online(config, config.critic, ppo_advantages, ppo_loss)
