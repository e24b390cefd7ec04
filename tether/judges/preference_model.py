"""A trained two-argument preference model P(y ≻ y' | x) (``tether reward-model pairwise=true``) as a
pairwise judge, and what such a model reads: the pairwise judge prompt with the two responses."""

from __future__ import annotations

from typing import Any

import torch

from tether.data.tokenize import TokenizedExample, pad_collate, tokenize_conversation
from tether.judges.llm import round_robin_scores
from tether.judges.templates import pairwise_prompt, response_text, special_token_strings
from tether.models.reward import ScalarReward

PREFERENCE_QUESTION = "Which response is better?"


def tokenize_preference_input(
    tokenizer: Any, prompt: Any, first: Any, second: Any, max_length: int
) -> list[int]:
    """Token ids of what a pairwise preference model reads: the (injection-safe) pairwise judge prompt
    with ``first`` as (A) and ``second`` as (B), as one user turn. Each response is cut to an equal share
    of ``max_length`` first, so truncation never drops the second response."""
    share = max(8, max_length // 3)

    def cut(text: Any) -> str:
        ids = tokenizer(response_text(text), add_special_tokens=False)["input_ids"][:share]
        return tokenizer.decode(ids)

    text = pairwise_prompt(
        prompt, cut(first), cut(second), PREFERENCE_QUESTION, special_token_strings(tokenizer)
    )
    return tokenize_conversation(tokenizer, [{"role": "user", "content": text}], max_length)


class PreferenceModelJudge:
    """A trained two-argument preference model as a pairwise judge: P(a ≻ b) = σ(f(x, a, b) − f(x, b, a))."""

    pairwise = True

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 512, batch_size: int = 16) -> None:
        self.module = ScalarReward(model).eval()
        self.tokenizer, self.max_length, self.batch_size = tokenizer, max_length, batch_size
        self.name = "preference_model"

    @torch.no_grad()
    def prefer(self, prompts: Any, first: Any, second: Any) -> list[float]:
        rows = [
            tokenize_preference_input(self.tokenizer, x, a, b, self.max_length)
            for x, a, b in zip(prompts, first, second)
        ] + [
            tokenize_preference_input(self.tokenizer, x, b, a, self.max_length)
            for x, a, b in zip(prompts, first, second)
        ]
        logits = []
        for start in range(0, len(rows), self.batch_size):
            batch = pad_collate(
                [TokenizedExample(r, r) for r in rows[start : start + self.batch_size]],
                self.tokenizer.pad_token_id,
            )
            logits.append(self.module(batch["input_ids"], batch["attention_mask"]))
        forward, backward = torch.cat(logits).chunk(2)
        return torch.sigmoid(forward - backward).tolist()

    def score(self, prompts: Any, completions: Any) -> list[float]:
        return round_robin_scores(self, prompts, completions)
