"""Nash learning from human feedback (Munos et al. 2023): with preferences that may be non-transitive,
look for the policy no other policy is preferred to, instead of maximising a scalar reward.

Each iteration: for every prompt, a player response y ~ π_θ and an opponent response y' → the judge's
preference P(y ≻ y') = σ((r(y) − r(y'))/scale) (any judge, or a pairwise preference model) → the Nash-MD
policy gradient of ``losses/nash.py``: [P(y ≻ y') − ½ − τ·(log π_θ(y) − log π_ref(y))]·∇log π_θ(y).

Here the opponent is a second sample of the current policy (Nash-MD's β = 0 end: self-play). The paper's
opponent, the geometric mixture π_θ^{1−β}·π_ref^{β}, is in ``losses.nash.geometric_mixture_logits`` and
drives the tests' tabular games; sampling it token by token from a language model is not wired yet.
"""

from __future__ import annotations

import torch

from tether.algorithms.online import run_online
from tether.config import NashMDConfig
from tether.losses.nash import nash_md_loss, preference_from_rewards
from tether.rollout.experience import Experience


def pair_preferences(experience: Experience, config: NashMDConfig) -> None:
    """Rows (2i, 2i + 1) play each other: each row's preference of itself over its partner."""
    scores = experience.scores.view(-1, 2) / max(config.preference_scale, 1e-8)
    first = preference_from_rewards(scores[:, 0], scores[:, 1])
    experience.extras["preference"] = torch.stack([first, 1 - first], dim=1).flatten()


def nash_loss(out: dict, minibatch: Experience, config: NashMDConfig, kl_coef: float):
    """Mean Nash-MD-PG loss over the rows (each row is a player against its partner)."""
    mask = minibatch.response_mask.float()
    policy = (out["logprobs"] * mask).sum(-1)
    reference = (minibatch.ref_logprobs * mask).sum(-1)
    losses, metrics = nash_md_loss(policy, minibatch.extras["preference"], reference, config.kl_coef)
    return losses.mean(), metrics


def run_nash_md(config: NashMDConfig) -> dict[str, float]:
    """Run Nash-MD (self-play opponent); returns the last iteration's metrics."""
    if config.group_size != 2:
        from tether.config import ConfigError

        raise ConfigError("field 'group_size': Nash-MD plays responses in pairs; use 2")
    return run_online(config, "none", pair_preferences, nash_loss)
