"""Judges: anything with ``score(prompts, completions) -> list[float]``.

A Python function, a trained reward or preference model, a gym task's gold reward and an LLM judge
(``judges/llm.py``) all serve behind this one interface, to rank samples in ``collect``, to score
rollouts in RL, and to evaluate.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from tether import TetherError
from tether.data.preference import as_messages
from tether.data.tokenize import TokenizedExample, pad_collate, tokenize_conversation


class Judge(Protocol):
    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]: ...


class FunctionJudge:
    """Wraps ``fn(prompts, completions) -> list[float]`` (batched) or ``fn(prompt, completion) -> float``.

    A function that cannot take those arguments, or returns anything but one finite number per
    completion, is a one-line ``TetherError`` naming ``name`` (``module:function``) and, for a bad value,
    the prompt it was for (``tether.rewards.validation``).
    """

    def __init__(self, fn: Callable[..., Any], batched: bool = True, name: str = "function") -> None:
        from tether.rewards.validation import check_reward_signature

        check_reward_signature(fn, name, batched)
        self.fn, self.batched, self.name = fn, batched, name

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        from tether.rewards.validation import check_scores

        prompts = list(prompts)
        if self.batched:
            return check_scores(self.name, self.fn(prompts, list(completions)), prompts)
        return check_scores(self.name, [self.fn(p, c) for p, c in zip(prompts, completions)], prompts)


def import_function(spec: str) -> Callable[..., Any]:
    """``package.module:function`` → the function."""
    module_name, _, attribute = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise TetherError(f"judge '{spec}': cannot import: {err}") from None
    if not callable(function):
        raise TetherError(f"judge '{spec}': {attribute} is not callable")
    return function


class RewardModelJudge:
    """Scores with a trained reward model (see ``models/reward.py``), in batches, without gradients."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32, max_length: int = 512) -> None:
        from tether.models.reward import ScalarReward

        self.reward = ScalarReward(model).eval()
        self.tokenizer, self.batch_size, self.max_length = tokenizer, batch_size, max_length
        self.name = "reward_model"

    @torch.no_grad()
    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        examples = [
            TokenizedExample(ids, ids)
            for ids in (
                tokenize_conversation(self.tokenizer, as_messages(p, c), self.max_length)
                for p, c in zip(prompts, completions)
            )
        ]
        scores: list[float] = []
        for start in range(0, len(examples), self.batch_size):
            batch = pad_collate(examples[start : start + self.batch_size], self.tokenizer.pad_token_id)
            scores += self.reward(batch["input_ids"], batch["attention_mask"]).tolist()
        return scores


def ranks_from_scores(scores: Sequence[float], tie_tolerance: float = 1e-9) -> list[int]:
    """Competition ranks, 1 = best; scores within ``tie_tolerance`` share a rank."""
    return [1 + sum(other > s + tie_tolerance for other in scores) for s in scores]


__all__ = ["FunctionJudge", "Judge", "RewardModelJudge", "import_function", "ranks_from_scores"]
