"""Nash learning from human feedback (Munos et al. 2023): with preferences that may be non-transitive,
look for the policy no other policy is preferred to, instead of maximising a scalar reward.

Each iteration, for every prompt:

1. a player response y ~ π_θ and an opponent response y' — by default from the geometric mixture
   π_θ^β ∝ π_θ^{1−β}·π_ref^β sampled token by token (Nash-MD-PG, §7; ``rollout/mixture.py``), or
   (``opponent=self``) a second sample of π_θ, the β = 0 self-play end, or (``opponent=past``) a sample
   of a uniform mixture of past policies — snapshots of π_θ taken every ``snapshot_every`` iterations,
   the start included — self-play against past policies, as the lectures suggest (fictitious play);
2. the judge's preference P(y ≻ y'): a pairwise judge's own probability (an LLM judge, RLAIF), or
   σ((r(y) − r(y'))/scale) from a scalar judge's scores;
3. the Nash-MD policy gradient of ``losses/nash.py``: [P(y ≻ y') − ½ − τ·(log π_θ(y) − log π_ref(y))]·∇log π_θ(y),
   on the player's responses only — the opponent is held fixed (with self-play both rows are players,
   each against the other).
"""

from __future__ import annotations

from typing import Any

import torch

from tether.algorithms.common import load_policy
from tether.algorithms.online import run_online
from tether.algorithms.online_batch import LoopHooks
from tether.config import ConfigError, NashMDConfig
from tether.losses.nash import nash_md_loss, preference_from_rewards
from tether.models.lora import frozen_copy, is_peft_model
from tether.rollout.experience import Experience
from tether.rollout.mixture import GeometricMixtureProcessor


def pair_preferences(experience: Experience, config: NashMDConfig) -> None:
    """Rows (2i, 2i + 1) play each other: each row's preference of itself over its partner, and which
    rows are players (all with self-play; the even rows against a mixture opponent).

    A pairwise judge's own probability P(first ≻ second) is read from the raw scores; with an unfinished
    penalty, a response that never stopped loses to one that did (P = 0 or 1), so truncation never pays.
    A scalar judge's scores already carry the penalty (``score − unfinished_penalty``)."""
    if bool(experience.extras["judge_pairwise"][0]):
        first = experience.raw_scores.view(-1, 2)[:, 0]  # a pairwise judge's P(first ≻ second)
        if config.unfinished_penalty > 0:
            finished = experience.finished.view(-1, 2)
            first = torch.where(finished[:, 0] & ~finished[:, 1], torch.ones_like(first), first)
            first = torch.where(~finished[:, 0] & finished[:, 1], torch.zeros_like(first), first)
    else:
        scores = experience.scores.view(-1, 2) / max(config.preference_scale, 1e-8)
        first = preference_from_rewards(scores[:, 0], scores[:, 1])
    experience.extras["preference"] = torch.stack([first, 1 - first], dim=1).flatten()
    players = torch.ones_like(experience.scores)
    if config.opponent in ("mixture", "past"):
        players.view(-1, 2)[:, 1] = 0.0
    experience.extras["player"] = players


def nash_loss(out: dict, minibatch: Experience, config: NashMDConfig, kl_coef: float):
    """Mean Nash-MD-PG loss over the player rows, with τ = ``kl_coef`` (the loop's β, adapted when
    ``target_kl`` is set) and the importance ratio π_θ/π_old, clipped by ``clip_eps``, for later epochs."""
    mask = minibatch.response_mask.float()
    policy = (out["logprobs"] * mask).sum(-1)
    reference = (minibatch.ref_logprobs * mask).sum(-1)
    old = (minibatch.old_logprobs * mask).sum(-1)
    losses, metrics = nash_md_loss(
        policy, minibatch.extras["preference"], reference, kl_coef, old_logprobs=old, clip_eps=config.clip_eps
    )
    players = minibatch.extras["player"]
    return (losses * players).sum() / players.sum().clamp(min=1.0), metrics


def player_rows(minibatch: Experience, config: NashMDConfig) -> float:
    """The rows ``nash_loss`` averages over (the players): weighs accumulated minibatches."""
    return float(minibatch.extras["player"].sum())


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


def past_policies_opponent(config: NashMDConfig, policy: Any) -> LoopHooks:
    """The odd rows play a uniform mixture of past policies: each opponent row draws one snapshot, whose
    next-token distribution replaces the policy's for that row (the mixture processor at β = 1)."""
    pool = [frozen_copy(policy)]
    state: dict[str, Any] = {"iteration": 0, "pool_size": 1}

    def processors(reference: Any, prompt_attention_mask: torch.Tensor) -> list:
        rows = prompt_attention_mask.shape[0]
        drawn = torch.randint(len(pool), (rows,))
        out = []
        for index, snapshot in enumerate(pool):
            mine = torch.zeros(rows, dtype=torch.bool)
            mine[1::2] = drawn[1::2] == index
            if mine.any():
                out.append(GeometricMixtureProcessor(snapshot, 1.0, mine, prompt_attention_mask))
        return out

    def after_update(experience: Experience, module: Any) -> dict[str, float]:
        state["iteration"] += 1
        if state["iteration"] % config.snapshot_every == 0:
            pool.append(frozen_copy(module.policy))
            del pool[: -config.past_pool_size]
        state["pool_size"] = len(pool)
        return {"opponent/pool_size": float(len(pool))}

    def models() -> dict[str, Any]:
        # On resume, state (restored first) says how large the pool was: grow it to that size, then load.
        while len(pool) < state["pool_size"]:
            pool.append(frozen_copy(policy))
        return {f"past_{i}": snapshot for i, snapshot in enumerate(pool)}

    return LoopHooks(opponent=processors, after_update=after_update, state=state, models=models)


def run_nash_md(config: NashMDConfig) -> dict[str, float]:
    """Run Nash-MD; returns the last iteration's metrics."""
    if config.group_size != 2:
        raise ConfigError("field 'group_size': Nash-MD plays responses in pairs; use 2")
    if config.mixture_coef > 1:
        raise ConfigError("field 'mixture_coef': must be in [0, 1]")
    if config.opponent == "past":
        policy, _ = load_policy(config)
        hooks = past_policies_opponent(config, policy)
    else:
        hooks = LoopHooks(opponent=mixture_opponent(config) if config.opponent == "mixture" else None)
    return run_online(config, "none", pair_preferences, nash_loss, hooks, count_fn=player_rows)
