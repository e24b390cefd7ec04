"""Numerical faults: no update on a non-finite loss or gradient, no non-finite weights written, valid JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tether import TetherError
from tether.cli import main
from tether.engine.guard import NanGuard, NumericalFault
from tether.engine.logging import MetricLogger, read_metrics
from tether.models import save_model


def test_guard_stops_naming_the_step_and_the_quantity():
    guard = NanGuard("stop")
    assert guard.allows(3, loss=torch.tensor(1.5), grad_norm=2.0)
    with pytest.raises(NumericalFault, match=r"^step 4: grad_norm is inf; stopped before updating"):
        guard.allows(4, loss=1.0, grad_norm=float("inf"))


def test_guard_skips_then_stops_after_max_skips():
    guard = NanGuard("skip", max_skips=2)
    assert not guard.allows(1, loss=float("nan"))
    assert guard.allows(2, loss=0.5)
    assert not guard.allows(3, loss=float("nan"))
    assert guard.skipped == 2
    with pytest.raises(NumericalFault, match="step 4: loss is nan; stopped after 2 skipped steps"):
        guard.allows(4, loss=float("nan"))


def test_metrics_stay_valid_json(tmp_path):
    logger = MetricLogger(tmp_path, tensorboard=False)
    logger.log(1, {"loss": float("nan"), "grad_norm": torch.tensor(float("inf")), "lr": 0.1})
    line = (tmp_path / "metrics.jsonl").read_text().strip()
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line) == {"step": 1, "loss": None, "grad_norm": None, "lr": 0.1}
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["loss"] is None


def test_non_finite_weights_are_never_saved(make_model, tokenizer, tmp_path):
    model = make_model()
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(TetherError, match="is not finite; nothing was written"):
        save_model(model, tokenizer, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_diverging_sft_run_stops_and_keeps_only_finite_checkpoints(make_model, tokenizer, tmp_path, capsys):
    save_model(make_model(), tokenizer, tmp_path / "tiny")
    out = tmp_path / "sft"
    code = main(
        [
            "sft",
            f"model={tmp_path / 'tiny'}",
            f"output_dir={out}",
            "learning_rate=1e30",  # one Adam step puts every weight near ±1e30: the next overflows
            "max_grad_norm=0",
            "max_steps=10",
            "batch_size=4",
            "save_every=1",
            "log_every=1",
            "warmup_ratio=0",
            "lr_scheduler=constant",
            "progress=false",
            "tensorboard=false",
        ]
    )
    captured = capsys.readouterr().err
    err = [line for line in captured.splitlines() if "error:" in line]
    assert code == 2 and "Traceback" not in captured
    assert len(err) == 1 and err[0].startswith("tether sft: error: step "), err
    assert " is nan" in err[0] or " is inf" in err[0]
    stopped_at = int(err[0].split("step ")[1].split(":")[0])
    assert 1 < stopped_at <= 10
    assert not (out / "model.safetensors").exists()  # no final model
    checkpoints = sorted((out / "checkpoints").glob("step-*"))
    assert checkpoints  # the finite ones before the fault are kept
    for folder in checkpoints:
        assert int(folder.name.split("-")[1]) < stopped_at
        weights = load_file(folder / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(row["loss"]) for row in rows)


def test_skip_policy_logs_skips_and_stops(make_model, tokenizer, tmp_path, capsys):
    save_model(make_model(), tokenizer, tmp_path / "tiny")
    out = tmp_path / "sft"
    args = [
        "sft",
        f"model={tmp_path / 'tiny'}",
        f"output_dir={out}",
        "learning_rate=1e30",  # one Adam step puts every weight near ±1e30: the next overflows
        "max_grad_norm=0",
        "max_steps=10",
        "batch_size=4",
        "log_every=1",
        "lr_scheduler=constant",
        "warmup_ratio=0",
        "progress=false",
        "tensorboard=false",
        "nan_policy=skip",
        "max_nan_skips=3",
    ]
    assert main(args) == 2
    assert "stopped after 3 skipped steps" in capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row.get("nan_skips", 0) for row in rows][-3:] == [1, 2, 3]
    assert rows[-1]["loss"] is None or rows[-1]["grad_norm"] is None  # logged as JSON null
