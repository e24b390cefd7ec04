"""How a policy fares in a multi-turn environment: the success rate (episodes with a positive reward), the
mean episode reward, the share of episodes that make at least one well-formed tool call, and turns."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

from tether.envs.base import Environment
from tether.envs.calculator import CALL, CalculatorError, evaluate
from tether.rollout.multiturn import sample_episodes


def well_formed_call(turn: str, pattern: re.Pattern = CALL) -> bool:
    """A turn that calls the calculator with an expression it can evaluate."""
    found = pattern.search(turn)
    if found is None:
        return False
    try:
        evaluate(found.group(1))
    except CalculatorError:
        return False
    return True


def episode_metrics(
    policy: Any,
    tokenizer: Any,
    prompts: list[Any],
    make_env: Callable[[], Environment],
    max_new_tokens: int = 32,
    max_turns: int = 4,
    temperature: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """One sampled episode per prompt (seeded); the metrics of the module docstring."""
    torch.manual_seed(seed)
    rewards, calls, turns = [], [], []
    for start in range(0, len(prompts), batch_size):
        experience, batch_rewards = sample_episodes(
            policy,
            tokenizer,
            prompts[start : start + batch_size],
            make_env,
            max_new_tokens=max_new_tokens,
            max_turns=max_turns,
            temperature=temperature,
        )
        rewards += batch_rewards.tolist()
        calls += [well_formed_call(text) for text in experience.completions]  # the policy's turns
        turns += experience.extras["turns"].tolist()
    n = max(len(rewards), 1)
    return {
        "success_rate": sum(r > 0 for r in rewards) / n,
        "reward": sum(rewards) / n,
        "tool_call_rate": sum(calls) / n,
        "turns": sum(turns) / n,
    }
