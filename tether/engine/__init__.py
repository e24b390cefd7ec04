"""The training loop's machinery on Accelerate: optimiser, schedule, gradient accumulation, clipping,
evaluation, logging, progress, checkpoints and resume."""

from tether.engine.trainer import Trainer

__all__ = ["Trainer"]
