"""Experiment trackers (``report_to``): each gets the run's config at the start, the rows of
metrics.jsonl, and is closed at the end. Fake tracker modules stand in for wandb, mlflow and trackio."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from tether import TetherError
from tether.config import TrainConfig
from tether.engine.logging import MetricLogger, parse_report_to, read_metrics
from tether.engine.session import Session


def fake_wandb_like(name: str) -> types.ModuleType:
    """A module with wandb's (and trackio's) ``init``, ``log`` and ``finish``, recording its calls."""
    module = types.ModuleType(name)
    module.calls = []
    module.init = lambda **kwargs: module.calls.append(("init", kwargs)) or types.SimpleNamespace(id="run-7")
    module.log = lambda row, step=None: module.calls.append(("log", dict(row), step))
    module.finish = lambda **kwargs: module.calls.append(("finish", *kwargs.values()))
    return module


def fake_mlflow() -> types.ModuleType:
    module = types.ModuleType("mlflow")
    module.calls = []
    module.set_experiment = lambda name: module.calls.append(("set_experiment", name))
    module.start_run = lambda run_name=None, run_id=None: (
        module.calls.append(("start_run", run_name or run_id))
        or types.SimpleNamespace(info=types.SimpleNamespace(run_id="mlf-3"))
    )
    module.log_params = lambda params: module.calls.append(("log_params", dict(params)))
    module.log_metrics = lambda metrics, step=None: module.calls.append(("log_metrics", dict(metrics), step))
    module.end_run = lambda **kwargs: module.calls.append(("end_run", *kwargs.values()))
    return module


@pytest.mark.parametrize("name", ["wandb", "trackio"])
def test_a_tracker_gets_the_config_every_row_and_is_closed(tmp_path, monkeypatch, name):
    fake = fake_wandb_like(name)
    monkeypatch.setitem(sys.modules, name, fake)
    logger = MetricLogger(tmp_path / "run", tensorboard=False, report_to=[name], run_config={"seed": 3})
    logger.log(1, {"loss": torch.tensor(0.5), "lr": 1e-3})
    logger.log(2, {"loss": 0.25, "lr": float("nan")})
    logger.close()

    (_, init), *logged, finish = fake.calls
    assert init["project"] == "tether" and init["name"] == "run" and init["config"] == {"seed": 3}
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [(row, step) for _, row, step in logged] == [
        ({k: v for k, v in r.items() if k != "step"}, r["step"]) for r in rows
    ]
    assert logged[1][1] == {"loss": 0.25, "lr": None}  # as in metrics.jsonl: NaN is null
    assert finish == ("finish",)


def test_mlflow_gets_params_numeric_metrics_and_is_ended(tmp_path, monkeypatch):
    fake = fake_mlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    logger = MetricLogger(
        tmp_path, tensorboard=False, report_to=["mlflow"], run_config={"seed": 3, "betas": [0.9, 0.99]}
    )
    logger.log(5, {"loss": 0.5, "lr": None})
    logger.close()
    assert fake.calls == [
        ("set_experiment", "tether"),
        ("start_run", tmp_path.name),
        ("log_params", {"seed": 3, "betas": "[0.9, 0.99]"}),
        ("log_metrics", {"loss": 0.5}, 5),
        ("end_run",),
    ]


def test_the_session_passes_its_config_and_rows(tmp_path, monkeypatch):
    fake = fake_wandb_like("wandb")
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = TrainConfig(output_dir=str(tmp_path), tensorboard=False, progress=False, report_to="wandb")
    session = Session(config, torch.nn.Linear(2, 1), total_steps=1)
    session.log(1, {"loss": 1.0})
    session.close()
    assert fake.calls[0][1]["config"]["report_to"] == "wandb"
    assert fake.calls[0][1]["config"]["learning_rate"] == config.learning_rate
    assert fake.calls[1:] == [("log", {"loss": 1.0}, 1), ("finish",)]


def test_a_tracker_not_installed_is_one_line_naming_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "trackio", None)  # import trackio raises ImportError
    with pytest.raises(
        TetherError, match=r"^report_to=trackio: trackio is not installed \(pip install trackio\)$"
    ):
        MetricLogger(tmp_path, tensorboard=False, report_to=["trackio"])


def test_report_to_names():
    assert parse_report_to("") == [] and parse_report_to("none") == []
    assert parse_report_to("wandb, mlflow") == ["wandb", "mlflow"]
    with pytest.raises(TetherError, match="unknown tracker 'wanb'; choose from mlflow, trackio, wandb"):
        parse_report_to("wanb")


def test_a_stage_refuses_a_missing_tracker_before_loading_anything(tmp_path, monkeypatch):
    from tether.stages import run_stage, stage_config

    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "mlflow" else object())
    config = stage_config("sft", {"model": str(tmp_path / "absent"), "report_to": "mlflow"})
    with pytest.raises(
        TetherError, match=r"^report_to=mlflow: mlflow is not installed \(pip install mlflow\)$"
    ):
        run_stage("sft", config)


def test_a_resumed_run_continues_the_trackers_run_and_a_crash_marks_it_failed(tmp_path, monkeypatch):
    wandb, mlflow = fake_wandb_like("wandb"), fake_mlflow()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    first = MetricLogger(tmp_path, tensorboard=False, report_to=["wandb", "mlflow"], run_config={"seed": 3})
    first.log(1, {"loss": 1.0})
    first.close(failed=True)  # e.g. killed by an exception in the loop
    assert wandb.calls[-1] == ("finish", 1) and mlflow.calls[-1] == ("end_run", "FAILED")
    assert json.loads((tmp_path / "trackers.json").read_text()) == {"wandb": "run-7", "mlflow": "mlf-3"}

    wandb.calls.clear()
    mlflow.calls.clear()
    resumed = MetricLogger(
        tmp_path, tensorboard=False, fresh=False, report_to=["wandb", "mlflow"], run_config={"seed": 3}
    )
    resumed.close()
    resumed.close()  # a second close does nothing
    init = wandb.calls[0][1]
    assert init["id"] == "run-7" and init["resume"] == "allow"
    assert wandb.calls[1:] == [("finish",)]
    # mlflow reopens the run by id (its parameters are already logged) and ends it normally
    assert mlflow.calls == [("set_experiment", "tether"), ("start_run", "mlf-3"), ("end_run",)]


def test_the_session_closes_the_trackers_as_failed_when_the_loop_raises(tmp_path, monkeypatch):
    fake = fake_wandb_like("wandb")
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = TrainConfig(output_dir=str(tmp_path), tensorboard=False, progress=False, report_to="wandb")
    session = Session(config, torch.nn.Linear(2, 1), total_steps=2)
    with pytest.raises(KeyboardInterrupt), session.running():
        session.log(1, {"loss": 1.0})
        raise KeyboardInterrupt
    assert fake.calls[-1] == ("finish", 1)


def test_a_metrics_row_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo', encoding="utf-8")
    assert read_metrics(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    logger = MetricLogger(tmp_path, tensorboard=False, fresh=False)
    logger.truncate_after(1)
    logger.log(2, {"loss": 0.25})
    assert read_metrics(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.25}]
    path.write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n', encoding="utf-8")
    with pytest.raises(TetherError, match=r"metrics.jsonl:2: not a JSON metrics row"):
        read_metrics(path)
