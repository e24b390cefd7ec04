"""Shared fixtures: a tokenizer trained on a slice of the gym corpus, and tiny models built from it."""

from __future__ import annotations

import pytest

from tether.gym import get_task
from tether.models import build_tiny_model, train_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    task = get_task("reviews")
    texts = task.pretrain_texts()[:500] + [e["messages"][0]["content"] for e in task.sft_examples()[:200]]
    return train_tokenizer(texts, vocab_size=400)


@pytest.fixture
def make_model(tokenizer):
    def build(seed: int = 0, hidden_size: int = 32, num_layers: int = 2):
        return build_tiny_model(
            tokenizer,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=2,
            intermediate_size=64,
            seed=seed,
        )

    return build
