"""How well a reward model's judgements match held-out preferences.

- accuracy: fraction of pairs with r(chosen) > r(rejected);
- bt_nll: mean −log σ(r_w − r_l), the Bradley–Terry negative log-likelihood;
- calibration: pairs binned by the predicted P(chosen ≻ rejected) = σ(r_w − r_l); a calibrated model's
  observed agreement rate in each bin matches the bin's mean prediction. Pairs are presented in a fixed
  random orientation so predictions cover [0, 1];
- reward statistics of chosen and rejected responses.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F


def pairwise_metrics(chosen: torch.Tensor, rejected: torch.Tensor, bins: int = 5, seed: int = 0) -> dict:
    """Metrics of rewards (P,) for the chosen and rejected responses of P held-out pairs."""
    chosen, rejected = chosen.double(), rejected.double()
    diff = chosen - rejected  # (P,)
    flip = torch.rand(diff.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) < 0.5
    predicted = torch.sigmoid(torch.where(flip, -diff, diff))  # P(first ≻ second)
    outcome = (~flip).double()  # 1 when the first shown is the chosen one
    table = []
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    for low, high in pairwise(edges.tolist()):
        inside = (predicted >= low) & ((predicted < high) if high < 1 else (predicted <= high))
        if inside.any():
            table.append(
                {
                    "bin": f"{low:.1f}–{high:.1f}",
                    "pairs": int(inside.sum()),
                    "predicted": float(predicted[inside].mean()),
                    "observed": float(outcome[inside].mean()),
                }
            )
    expected_calibration_error = sum(
        row["pairs"] * abs(row["predicted"] - row["observed"]) for row in table
    ) / max(1, diff.numel())
    return {
        "accuracy": float((diff > 0).double().mean()),
        "bt_nll": float(-F.logsigmoid(diff).mean()),
        "calibration": table,
        "ece": float(expected_calibration_error),
        "chosen_mean": float(chosen.mean()),
        "chosen_std": float(chosen.std()) if chosen.numel() > 1 else 0.0,
        "rejected_mean": float(rejected.mean()),
        "rejected_std": float(rejected.std()) if rejected.numel() > 1 else 0.0,
        "pairs": int(diff.numel()),
    }
