"""The training loops' machinery on Accelerate: the ``Session`` every loop builds (accelerator and mixed
precision, optimiser, schedule, gradient accumulation, clipping, NaN guard, logging, progress, checkpoints
and resume), the offline ``Trainer`` on top of it, and the allocator settings the CLI applies."""

from __future__ import annotations

from typing import Any

__all__ = ["Session", "Trainer", "build_accelerator"]


def __getattr__(name: str) -> Any:
    # Trainer and Session (and with them torch and Accelerate) are imported on first use, so that importing
    # ``tether.engine.allocator`` at the CLI's start-up stays cheap.
    if name == "Trainer":
        from tether.engine.trainer import Trainer

        return Trainer
    if name in ("Session", "build_accelerator"):
        from tether.engine.session import Session, build_accelerator

        return {"Session": Session, "build_accelerator": build_accelerator}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
