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
RUN_IDS = "trackers.json"  # in the output folder: each tracker's run id, so a resumed run continues it


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
    ``finish()``); mlflow has its own (``start_run``, ``log_params``, ``log_metrics``, ``end_run``).

    A resumed run (``resume``) continues the tracker's run it started before: wandb and mlflow by the run
    id saved in ``output_dir/trackers.json``, trackio by the run's name."""

    def __init__(
        self, name: str, run_name: str, config: Mapping[str, Any], output_dir: Path, resume: bool = False
    ) -> None:
        try:
            self.module = importlib.import_module(name)
        except ImportError:
            raise TetherError(not_installed(name)) from None
        self.name = name
        ids_path = output_dir / RUN_IDS
        ids = json.loads(ids_path.read_text(encoding="utf-8")) if ids_path.exists() else {}
        previous = ids.get(name) if resume else None
        if name == "mlflow":
            self.module.set_experiment(PROJECT)
            if previous:
                started = self.module.start_run(run_id=previous)
            else:
                started = self.module.start_run(run_name=run_name)
                self.module.log_params({key: _param(value) for key, value in config.items()})
            run_id = getattr(getattr(started, "info", None), "run_id", None)
        elif name == "wandb":
            extra = {"id": previous, "resume": "allow"} if previous else {}
            started = self.module.init(
                project=PROJECT, name=run_name, config=dict(config), dir=str(output_dir), **extra
            )
            run_id = getattr(started, "id", None)
        else:
            extra = {"resume": "allow"} if resume else {}
            self.module.init(project=PROJECT, name=run_name, config=dict(config), **extra)
            run_id = run_name
        if isinstance(run_id, str):
            ids_path.write_text(json.dumps({**ids, name: run_id}), encoding="utf-8")

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

    def close(self, failed: bool = False) -> None:
        """End the tracker's run; ``failed``: the run stopped on an error (wandb and mlflow mark it so)."""
        if self.name == "mlflow":
            self.module.end_run(status="FAILED") if failed else self.module.end_run()
        elif self.name == "wandb" and failed:
            self.module.finish(exit_code=1)
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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for name in report_to:
                self.trackers.append(Tracker(name, run_name, run_config or {}, self.path.parent, not fresh))
            if fresh:
                self.path.unlink(missing_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run replays them)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [row for row in read_metrics(self.path) if row.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")

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

    def close(self, failed: bool = False) -> None:
        """Close TensorBoard and the trackers (``failed``: the run stopped on an error); a second call
        does nothing."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        for tracker in self.trackers:
            tracker.close(failed)
        self.trackers = []


def _plain(value: Any) -> Any:
    """A JSON value: tensors become numbers, and NaN or ±inf become null (JSON has no such numbers)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file. A last line cut short (the process killed while writing it)
    is dropped; a broken line before it is an error naming the file and line."""
    lines = [(n, line) for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line.strip()]
    rows = []
    for i, (number, line) in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                break
            raise TetherError(f"{path}:{number}: not a JSON metrics row ({err.msg})") from None
    return rows
