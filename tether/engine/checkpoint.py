"""Resumable checkpoints, written atomically: a temporary folder, then a rename.

A checkpoint holds what Accelerate's ``save_state`` writes (model, optimiser, RNG states of every process)
plus ``trainer_state.json`` with the step — which fixes the learning-rate schedule and the data position,
both pure functions of the step — and whatever else the loop carries (β, a moving baseline, counters), and
``extra_models/NAME.safetensors`` for the models a loop holds besides the prepared one (off-policy DPG's
proposal, Nash-MD's past policies).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

PREFIX = "step-"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(
    accelerator: Any,
    output_dir: str | Path,
    step: int,
    state: dict[str, Any],
    keep: int,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``checkpoints/step-N`` (all processes take part; the main one renames) and prune old ones.
    ``extra(folder)`` (main process) may add files — e.g. models the loop holds besides the prepared one —
    before the folder is renamed into place."""
    root = checkpoint_dir(output_dir)
    final = root / f"{PREFIX}{step}"
    tmp = root / f".tmp-{PREFIX}{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        if extra is not None:
            extra(tmp)
        (tmp / "trainer_state.json").write_text(json.dumps({**state, "step": step}), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_models(models: dict[str, Any], folder: Path) -> None:
    """``models`` (by name) as ``folder/extra_models/NAME.safetensors``."""
    from safetensors.torch import save_file

    target = folder / "extra_models"
    target.mkdir()
    for name, model in models.items():
        save_file(
            {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()},
            target / f"{name}.safetensors",
        )


def load_models(models: dict[str, Any], folder: str | Path) -> None:
    """Restore what ``save_models`` wrote into ``models`` (the same names)."""
    from safetensors.torch import load_file

    for name, model in models.items():
        model.load_state_dict(load_file(Path(folder) / "extra_models" / f"{name}.safetensors"))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of an interrupted save are ignored)."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def load_checkpoint(accelerator: Any, path: str | Path) -> dict[str, Any]:
    """Restore model, optimiser and RNG states; return the trainer state (with ``step``)."""
    accelerator.load_state(str(path))
    return json.loads((Path(path) / "trainer_state.json").read_text(encoding="utf-8"))
