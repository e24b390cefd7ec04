"""A two-argument preference model learns non-transitive preferences that no scalar reward can fit."""

from __future__ import annotations

import json

import pytest
import torch

from tether.algorithms.reward_model import run_reward_model
from tether.config import RewardModelConfig
from tether.judges.preference_model import PreferenceModelJudge
from tether.models import save_model
from tether.specs import resolve_judge

CYCLE = [("the phone.", "the novel."), ("the novel.", "the kettle."), ("the kettle.", "the phone.")]


@pytest.fixture
def cyclic_data(tmp_path):
    """Rock–paper–scissors over three answers: each beats the next, the last beats the first."""
    rows = [{"prompt": "pick one.", "chosen": winner, "rejected": loser} for winner, loser in CYCLE] * 32
    path = tmp_path / "cycle.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held_out = tmp_path / "cycle_eval.jsonl"
    held_out.write_text(
        "".join(
            json.dumps({"prompt": "pick one.", "chosen": winner, "rejected": loser}) + "\n"
            for winner, loser in CYCLE
        )
    )
    return str(path), str(held_out)


def train(tmp_path, tiny, data, held_out, pairwise):
    out = tmp_path / ("preference" if pairwise else "reward")
    metrics = run_reward_model(
        RewardModelConfig(
            model=tiny, data=data, eval_data=held_out, output_dir=str(out), pairwise=pairwise,
            max_steps=60, batch_size=16, learning_rate=3e-3, progress=False, tensorboard=False, max_length=256,
        )
    )  # fmt: skip
    return out, metrics


def test_preference_model_fits_a_cycle_a_reward_model_cannot(make_model, tokenizer, tmp_path, cyclic_data):
    tiny = tmp_path / "tiny"
    save_model(make_model(seed=0, hidden_size=48), tokenizer, tiny)
    data, held_out = cyclic_data
    _, reward_metrics = train(tmp_path, str(tiny), data, held_out, pairwise=False)
    folder, preference_metrics = train(tmp_path, str(tiny), data, held_out, pairwise=True)
    # Any scalar r orders the three answers, so it gets at most two of the three cyclic pairs right.
    assert reward_metrics["accuracy"] <= 2 / 3 + 1e-9
    assert preference_metrics["accuracy"] == 1.0

    judge = resolve_judge(str(folder))
    assert isinstance(judge, PreferenceModelJudge)
    firsts, seconds = [w for w, _ in CYCLE], [loser for _, loser in CYCLE]
    forward = torch.tensor(judge.prefer(["pick one."] * 3, firsts, seconds))
    backward = torch.tensor(judge.prefer(["pick one."] * 3, seconds, firsts))
    torch.testing.assert_close(forward + backward, torch.ones(3))  # antisymmetric by construction
    assert (forward > 0.9).all()  # each answer beats the one it should: a cycle
