"""Shared fixtures: a tokenizer trained on a slice of the gym corpus, tiny models built from it, and one run of
the default pipeline (evaluation shortened) that the pipeline, seeds and frontier tests share."""

from __future__ import annotations

import pytest

from tether.config import PipelineConfig, load_config
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


# The embedded default with progress bars off and a shorter evaluation.
PIPELINE_OVERRIDES = [
    *(
        f"{stage}.progress=false"
        for stage in ("pretrain", "sft", "reward_model", "dpo", "ppo", "grpo", "ppo_no_kl", "pretrain_rnn")
    ),
    "evaluate.n_prompts=32",
    "evaluate.n_examples=100",
    "n_policy_prompts=100",
]


@pytest.fixture(scope="session")
def default_pipeline(tmp_path_factory):
    """(folder, config, summary) of the default pipeline, run once per test session."""
    from tether.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("pipeline")
    config = load_config(PipelineConfig, None, [f"output_dir={root}", *PIPELINE_OVERRIDES])
    return root, config, run_pipeline(config)
