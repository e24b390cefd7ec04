"""The training loop's machinery on Accelerate: optimiser, schedule, gradient accumulation, clipping,
evaluation, logging, progress, checkpoints and resume; and the allocator settings the CLI applies."""

from __future__ import annotations

from typing import Any

__all__ = ["Trainer"]


def __getattr__(name: str) -> Any:
    # Trainer (and with it torch and Accelerate) is imported on first use, so that importing
    # ``tether.engine.allocator`` at the CLI's start-up stays cheap.
    if name == "Trainer":
        from tether.engine.trainer import Trainer

        return Trainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
