"""The Python API: ``tether.run`` runs a stage as the CLI would, with the same checks of every field, and
``import tether`` stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import tether
from tether import TetherError

TINY = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "vocab_size": 300}


def test_import_tether_loads_no_torch():
    code = "import sys, tether; assert tether.TetherError; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_pretrain_then_sft_through_the_api(tmp_path):
    pretrained = tether.run(
        "pretrain",
        output_dir=str(tmp_path / "pretrain"),
        max_steps=3,
        progress=False,
        tensorboard=False,
        **TINY,
    )
    # Three steps of a fresh model: the loss is still near log(vocabulary) = log(300) ≈ 5.70.
    assert pretrained["step"] == 3
    assert 5.0 < pretrained["loss"] < 6.2 and 5.0 < pretrained["eval/loss"] < 6.2
    tuned = tether.run(
        "sft",
        model=str(tmp_path / "pretrain"),
        data="gym:reviews",
        output_dir=str(tmp_path / "sft"),
        max_steps=2,
        learning_rate=1e-3,
        progress=False,
        tensorboard=False,
    )
    assert tuned["step"] == 2 and tuned["eval/loss"] > 0
    folder = tmp_path / "sft"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "tether_config.yaml"):
        assert (folder / name).is_file(), name
    saved = yaml.safe_load((folder / "tether_config.yaml").read_text())
    assert (saved["max_steps"], saved["model"], saved["learning_rate"]) == (
        2,
        str(tmp_path / "pretrain"),
        1e-3,
    )
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert max(row["step"] for row in rows) == 2


def test_a_bad_key_names_it_and_the_closest_field():
    with pytest.raises(
        TetherError, match=r"tether.run\('dpo'\): unknown field 'betaa'; did you mean 'beta'\?"
    ):
        tether.run("dpo", betaa=0.1)


def test_values_are_converted_and_bounds_checked_as_in_yaml(tmp_path):
    config = tether.config_for("reward_model", max_steps="4", learning_rate=1, lora=True)
    assert (config.max_steps, config.learning_rate, config.lora) == (4, 1.0, True)
    assert isinstance(config.learning_rate, float)
    with pytest.raises(TetherError, match="field 'max_steps': must be at least 0, got -1"):
        tether.run("sft", max_steps=-1)
    with pytest.raises(TetherError, match="field 'lora': expected true or false, got 'maybe'"):
        tether.config_for("sft", lora="maybe")
    path = tmp_path / "dpo.yaml"
    path.write_text("beta: 0.3\nmax_steps: 5\n")
    config = tether.config_for("dpo", str(path), max_steps=7)  # keywords win over the file
    assert (config.beta, config.max_steps) == (0.3, 7)


def test_an_unknown_stage_names_the_closest():
    with pytest.raises(TetherError, match="unknown stage 'dpoo'; did you mean 'dpo'\\?"):
        tether.run("dpoo")
