"""Iterative DPO: each round samples from the previous round's policy and runs DPO against the reference."""

from __future__ import annotations

import pytest
import torch
import yaml

from tether.algorithms.online_dpo import run_iterative_dpo
from tether.config import IterativeDPOConfig
from tether.models import load_causal_lm, save_model


def characters(prompts: list, completions: list) -> list[float]:
    """A judge that seldom ties, whatever an untrained model samples: longer text wins."""
    return [float(len(c)) for c in completions]


@pytest.mark.parametrize("reference", ["initial", "previous"])
def test_rounds_chain_policies_and_choose_the_reference(make_model, tokenizer, tmp_path, reference):
    start = tmp_path / "start"
    save_model(make_model(seed=4), tokenizer, start)
    out = tmp_path / "iterative"
    result = run_iterative_dpo(
        IterativeDPOConfig(
            output_dir=str(out),
            model=str(start),
            judge=f"{__name__}:characters",
            gold="gym:reviews",
            rounds=2,
            n_prompts=8,
            num_samples=3,
            max_new_tokens=8,
            batch_size=4,
            max_steps=2,
            reference=reference,
            progress=False,
        )
    )
    assert result["final"] == str(out / "round-1")
    assert [r["round"] for r in result["rounds"]] == [0, 1]
    assert all(isinstance(r["gold/policy"], float) for r in result["rounds"]) and "gold/final" in result
    # round 1 sampled from round 0's policy, and its DPO started there, against the chosen reference
    collect = yaml.safe_load((out / "round-1" / "collect" / "tether_config.yaml").read_text())
    assert collect["policy"] == str(out / "round-0")
    dpo = yaml.safe_load((out / "round-1" / "tether_config.yaml").read_text())
    assert dpo["model"] == str(out / "round-0")
    assert dpo["ref_model"] == (str(start) if reference == "initial" else "")
    assert dpo["data"] == str(out / "round-1" / "collect" / "pairs.jsonl")
    before, after = load_causal_lm(str(start)), load_causal_lm(result["final"])
    moved = sum(
        float((a - b).abs().sum()) for a, b in zip(before.state_dict().values(), after.state_dict().values())
    )
    assert moved > 0
    assert torch.isfinite(torch.tensor(moved))
