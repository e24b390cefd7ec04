"""Nash learning from human feedback (Munos et al. 2023): with preferences that may be non-transitive,
look for the policy no other policy is preferred to, instead of maximising a scalar reward.

Each iteration, for every prompt:

1. a player response y ~ π_θ and an opponent response y' — by default from the geometric mixture
   π_θ^β ∝ π_θ^{1−β}·π_ref^β sampled token by token (Nash-MD-PG, §7; ``rollout/mixture.py``), or
   (``opponent=self``) a second sample of π_θ, the β = 0 self-play end;
2. the judge's preference P(y ≻ y'): a pairwise judge's own probability (an LLM judge, RLAIF), or
   σ((r(y) − r(y'))/scale) from a scalar judge's scores;
3. the Nash-MD policy gradient of ``losses/nash.py``: [P(y ≻ y') − ½ − τ·(log π_θ(y) − log π_ref(y))]·∇log π_θ(y),
   on the player's responses only — the opponent is held fixed (with self-play both rows are players,
   each against the other).
"""

from __future__ import annotations

from typing import Any

import torch

from tether.algorithms.online import run_online
from tether.config import ConfigError, NashMDConfig
from tether.losses.nash import nash_md_loss, preference_from_rewards
from tether.models.lora import is_peft_model
from tether.rollout.experience import Experience
from tether.rollout.mixture import GeometricMixtureProcessor


def pair_preferences(experience: Experience, config: NashMDConfig) -> None:
    """Rows (2i, 2i + 1) play each other: each row's preference of itself over its partner, and which
    rows are players (all with self-play; the even rows against a mixture opponent)."""
    if bool(experience.extras["judge_pairwise"][0]):
        first = experience.scores.view(-1, 2)[:, 0]  # a pairwise judge's P(first ≻ second)
    else:
        scores = experience.scores.view(-1, 2) / max(config.preference_scale, 1e-8)
        first = preference_from_rewards(scores[:, 0], scores[:, 1])
    experience.extras["preference"] = torch.stack([first, 1 - first], dim=1).flatten()
    players = torch.ones_like(experience.scores)
    if config.opponent == "mixture":
        players.view(-1, 2)[:, 1] = 0.0
    experience.extras["player"] = players


def nash_loss(out: dict, minibatch: Experience, config: NashMDConfig, kl_coef: float):
    """Mean Nash-MD-PG loss over the player rows."""
    mask = minibatch.response_mask.float()
    policy = (out["logprobs"] * mask).sum(-1)
    reference = (minibatch.ref_logprobs * mask).sum(-1)
    losses, metrics = nash_md_loss(policy, minibatch.extras["preference"], reference, config.kl_coef)
    players = minibatch.extras["player"]
    return (losses * players).sum() / players.sum().clamp(min=1.0), metrics


def mixture_opponent(config: NashMDConfig):
    """The logits processors that make the odd rows of each batch sample from π_θ^β."""

    def processors(reference: Any, prompt_attention_mask: torch.Tensor) -> list:
        rows = torch.zeros(prompt_attention_mask.shape[0], dtype=torch.bool)
        rows[1::2] = True
        return [
            GeometricMixtureProcessor(
                reference,
                config.mixture_coef,
                rows,
                prompt_attention_mask,
                adapters_off=is_peft_model(reference),
            )
        ]

    return processors


def run_nash_md(config: NashMDConfig) -> dict[str, float]:
    """Run Nash-MD; returns the last iteration's metrics."""
    if config.group_size != 2:
        raise ConfigError("field 'group_size': Nash-MD plays responses in pairs; use 2")
    if config.mixture_coef > 1:
        raise ConfigError("field 'mixture_coef': must be in [0, 1]")
    opponent = mixture_opponent(config) if config.opponent == "mixture" else None
    return run_online(config, "none", pair_preferences, nash_loss, opponent)
