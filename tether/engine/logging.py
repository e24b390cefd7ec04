"""Metrics to JSONL (one object per logged step), TensorBoard and the experiment trackers of
``report_to`` (wandb, mlflow, trackio), written by the main process only."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tether import TetherError

# tracker → the pip package that provides it
TRACKERS = {"wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}
PROJECT = "tether"  # the project (wandb, trackio) or experiment (mlflow) every run is filed under


def parse_report_to(spec: str) -> list[str]:
    """``"wandb,mlflow"`` → ``["wandb", "mlflow"]``; ``""`` or ``"none"`` → []."""
    names = [name.strip() for name in spec.split(",") if name.strip() and name.strip() != "none"]
    for name in names:
        if name not in TRACKERS:
            raise TetherError(
                f"field 'report_to': unknown tracker '{name}'; choose from {', '.join(sorted(TRACKERS))}"
            )
    return names


def check_trackers(spec: str) -> list[str]:
    """:func:`parse_report_to`, and a one-line error for a tracker that is not installed, before a run
    loads anything."""
    names = parse_report_to(spec)
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise TetherError(not_installed(name))
    return names


def not_installed(name: str) -> str:
    return f"report_to={name}: {name} is not installed (pip install {TRACKERS[name]})"


class Tracker:
    """One experiment tracker's run: started with the run's config, given every metrics row, closed at
    the end. wandb and trackio share an API (``init(project, name, config)``, ``log(row, step)``,
    ``finish()``); mlflow has its own (``start_run``, ``log_params``, ``log_metrics``, ``end_run``)."""

    def __init__(self, name: str, run_name: str, config: Mapping[str, Any], output_dir: Path) -> None:
        try:
            self.module = importlib.import_module(name)
        except ImportError:
            raise TetherError(not_installed(name)) from None
        self.name = name
        if name == "mlflow":
            self.module.set_experiment(PROJECT)
            self.module.start_run(run_name=run_name)
            self.module.log_params({key: _param(value) for key, value in config.items()})
        elif name == "wandb":
            self.module.init(project=PROJECT, name=run_name, config=dict(config), dir=str(output_dir))
        else:
            self.module.init(project=PROJECT, name=run_name, config=dict(config))

    def log(self, step: int, row: Mapping[str, Any]) -> None:
        """``row``: a metrics.jsonl row (``step`` and plain values)."""
        metrics = {key: value for key, value in row.items() if key != "step"}
        if self.name == "mlflow":
            numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            self.module.log_metrics(numbers, step=step)
        elif self.name == "trackio" and "step" not in inspect.signature(self.module.log).parameters:
            self.module.log(metrics)
        else:
            self.module.log(metrics, step=step)

    def close(self) -> None:
        if self.name == "mlflow":
            self.module.end_run()
        else:
            self.module.finish()


def _param(value: Any) -> Any:
    """An mlflow parameter: a number, bool or string as it is, anything else as JSON."""
    return value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)


class MetricLogger:
    """Appends metric rows to ``output_dir/metrics.jsonl`` and, optionally, TensorBoard scalars and the
    trackers named in ``report_to``."""

    def __init__(
        self,
        output_dir: str | Path,
        enabled: bool = True,
        tensorboard: bool = True,
        fresh: bool = True,
        report_to: Sequence[str] = (),
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        """``fresh``: start a new log (a re-run replaces the old one); else append (a resumed run).
        ``report_to``: tracker names (``parse_report_to``), each started with ``run_config``; a tracker
        that is not installed is a one-line ``TetherError`` naming its pip package."""
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self.writer = None
        self.trackers: list[Tracker] = []
        if enabled:
            run_name = Path(output_dir).resolve().name
            for name in report_to:
                self.trackers.append(Tracker(name, run_name, run_config or {}, Path(output_dir)))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                self.path.unlink(missing_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run replays them)."""
        if not self.enabled or not self.path.exists():
            return
        rows = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in rows if json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(row, allow_nan=False) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()
        for tracker in self.trackers:
            tracker.log(step, row)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


def _plain(value: Any) -> Any:
    """A JSON value: tensors become numbers, and NaN or ±inf become null (JSON has no such numbers)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
