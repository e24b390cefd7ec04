"""The interface every gym task implements."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod

SPLIT_OFFSETS = {"train": 0, "eval": 1_000_003, "test": 2_000_003}


class Task(ABC):
    """A synthetic task: corpus, instruction data and prompts, all deterministic from ``seed``.

    Sizes are class attributes so a task stays small enough for a 2-core CPU to learn in minutes.
    """

    name: str = "task"
    n_pretrain: int = 20_000
    n_sft: dict[str, int] = {"train": 4_000, "eval": 200, "test": 200}  # noqa: RUF012

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def rng(self, split: str, stream: int = 0) -> random.Random:
        """An RNG private to (seed, split, stream), so splits never share draws."""
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLIT_OFFSETS)}")
        return random.Random(self.seed * 7_919 + SPLIT_OFFSETS[split] + stream * 104_729)

    @abstractmethod
    def sample_example(self, rng: random.Random) -> tuple[str, str]:
        """One (prompt, response) pair of the kind the SFT data holds."""

    @abstractmethod
    def document(self, rng: random.Random) -> str:
        """One plain-text pre-training document."""

    def pretrain_texts(self, split: str = "train", n: int | None = None) -> list[str]:
        """Plain-text documents: the pre-training corpus (``train``, ``n_pretrain`` of them), or held-out
        documents of the same kind from another split (``eval``, ``test``) for language-model perplexity."""
        rng = self.rng(split, stream=1)
        return [self.document(rng) for _ in range(n or self.n_pretrain)]

    def sft_examples(self, split: str = "train") -> list[dict]:
        """Conversations ``{"messages": [user, assistant]}`` for instruction tuning."""
        rng = self.rng(split, stream=2)
        examples = []
        for _ in range(self.n_sft[split]):
            prompt, response = self.sample_example(rng)
            examples.append(
                {
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": response},
                    ]
                }
            )
        return examples

    @abstractmethod
    def gold_reward(self, prompt: str, completion: str) -> float:
        """The hidden gold reward that plays the human. Training never sees it directly."""

    def reference_answer(self, prompt: str) -> str | None:
        """The answer a prompt asks for, for tasks with one right answer (exact-match rewards); None here."""
        return None

    def gold_rewards(self, prompts: list[str], completions: list[str]) -> list[float]:
        """:meth:`gold_reward` of each (prompt, completion): the judge interface."""
        return [self.gold_reward(p, c) for p, c in zip(prompts, completions)]

    def prompts(self, split: str = "eval", n: int | None = None) -> list[str]:
        rng = self.rng(split, stream=3)
        return [self.sample_example(rng)[0] for _ in range(n or self.n_sft[split])]
