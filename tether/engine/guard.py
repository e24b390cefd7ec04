"""The numerical-fault guard: no optimiser step is taken on a non-finite loss or gradient, and no
non-finite weights are ever written as a model or a checkpoint.

``nan_policy=stop`` (the default) ends the run with a one-line error naming the step and the quantity;
the checkpoints already written (all finite) stay. ``nan_policy=skip`` drops the step's update instead,
counts it (``nan_skips`` in the metrics) and stops once more than ``max_nan_skips`` steps were dropped.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from tether import TetherError


class NumericalFault(TetherError):
    """A non-finite loss, gradient norm, score or weight."""


class NanGuard:
    """Decides, before each optimiser step, whether the step may be taken (see the module docstring)."""

    def __init__(self, policy: str = "stop", max_skips: int = 10) -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy must be 'stop' or 'skip', got {policy!r}")
        self.policy, self.max_skips, self.skipped = policy, max_skips, 0

    def allows(self, step: int, **quantities: float | torch.Tensor) -> bool:
        """True when every quantity is finite; False when the step is to be skipped; raises
        ``NumericalFault`` when the run must stop. ``step`` is the 1-based optimiser step."""
        numbers = {k: float(v.detach() if isinstance(v, torch.Tensor) else v) for k, v in quantities.items()}
        bad = {name: value for name, value in numbers.items() if not math.isfinite(value)}
        if not bad:
            return True
        what = ", ".join(f"{name} is {value}" for name, value in bad.items())
        if self.policy == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            tqdm.write(f"step {step}: {what}; update skipped ({self.skipped} of at most {self.max_skips})")
            return False
        after = f" after {self.skipped} skipped steps (max_nan_skips)" if self.policy == "skip" else ""
        raise NumericalFault(
            f"step {step}: {what}; stopped{after} before updating the weights (lower learning_rate or set "
            "max_grad_norm; finite checkpoints already written are kept)"
        )
