"""Conclusions that survive a reseed: per-seed results summarised as mean ± standard deviation, the
reward-hacking check of a β = 0 run on one seed, and gold reward read off a method's reward–KL curve at a
chosen KL (the comparison at matched KL that Gao et al., 2023, "Scaling laws for reward model
overoptimization", make between best-of-n and RL).

Pure Python over the metric dicts that ``eval.policy.evaluate_policy`` returns and the ``metrics.jsonl`` rows
that the online stages log; nothing here samples or trains.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The columns of a policy's evaluation that are summarised over seeds.
COLUMNS = ("gold", "win_rate", "proxy", "kl", "length", "distinct_2")
# "Gold falls clearly below its own peak": by at least this much (gold rewards of the gym tasks lie in [-1, 1]).
CLEAR_DROP = 0.1


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1 in the denominator; 0 for a single value)."""
    if not values:
        raise ValueError("mean_std of no values")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise_seeds(runs: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, list[float]]]:
    """``runs[seed][policy][column]`` → ``{policy: {column: [mean, std]}}`` over the seeds that have the
    column; a policy's columns keep the order of ``COLUMNS``."""
    policies: list[str] = []
    for per_seed in runs.values():
        policies += [name for name in per_seed if name not in policies]
    summary: dict[str, dict[str, list[float]]] = {}
    for name in policies:
        summary[name] = {}
        for column in COLUMNS:
            values = [float(r[name][column]) for r in runs.values() if column in r.get(name, {})]
            if values:
                summary[name][column] = list(mean_std(values))
    return summary


def smoothed(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (the first ``window − 1`` points average what there is so far)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def hacking_check(
    rows: Iterable[Mapping[str, Any]],
    final_gold: float,
    tethered_final_gold: float,
    window: int = 5,
    clear_drop: float = CLEAR_DROP,
) -> dict[str, Any]:
    """Did a β = 0 run hack its reward model? From its logged training rows (``reward/score``, the proxy,
    and ``reward/gold``): the proxy's smoothed curve ends above where it started, and the gold's smoothed
    curve ends at least ``clear_drop`` below its own peak; and, held out, its final gold is below the
    tethered (β > 0) run's. ``holds`` is all three."""
    rows = [r for r in rows if "reward/score" in r and "reward/gold" in r]
    if len(rows) < 2:
        raise ValueError("hacking_check needs at least two logged training steps")
    proxy = smoothed([float(r["reward/score"]) for r in rows], window)
    gold = smoothed([float(r["reward/gold"]) for r in rows], window)
    result = {
        "proxy_start": proxy[0],
        "proxy_end": proxy[-1],
        "gold_peak": max(gold),
        "gold_end": gold[-1],
        "final_gold": final_gold,
        "tethered_final_gold": tethered_final_gold,
        "proxy_rises": proxy[-1] > proxy[0],
        "gold_falls_from_peak": max(gold) - gold[-1] >= clear_drop,
        "below_tethered": final_gold < tethered_final_gold,
    }
    result["holds"] = result["proxy_rises"] and result["gold_falls_from_peak"] and result["below_tethered"]
    return result


def gold_at_kl(points: Iterable[tuple[float, float]], kl: float) -> float | None:
    """Gold reward at ``kl`` on a method's reward–KL curve: linear interpolation between the two measured
    points (KL, gold) that bracket ``kl`` after sorting by KL; None outside the measured range (no
    extrapolation). Points at the same KL are averaged."""
    by_kl: dict[float, list[float]] = {}
    for x, y in points:
        by_kl.setdefault(float(x), []).append(float(y))
    curve = sorted((x, sum(ys) / len(ys)) for x, ys in by_kl.items())
    if not curve or kl < curve[0][0] or kl > curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x0 <= kl <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (kl - x0) / (x1 - x0)
    return curve[0][1]  # a single point, at exactly that KL


def fit_rl_gold_curve(points: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """Gao et al.'s functional form for RL's gold reward against KL, fitted by least squares: the gain over
    the initial policy ``g(d) = d·(α − β·ln d)``, with ``d = √KL`` (their eq. for RL; best-of-n's is
    ``d·(α − β·d)``). ``points`` are (KL, gain) pairs with KL > 0; returns (α, β). The form is linear in α
    and β, so the fit is the 2 × 2 normal equations' solution."""
    rows = [(math.sqrt(kl), gain) for kl, gain in points if kl > 0]
    if len(rows) < 2:
        raise ValueError(f"fitting the RL gold curve needs at least 2 points with KL > 0, got {len(rows)}")
    # Features a = d, b = −d·ln d: gain = α·a + β·b.
    feats = [(d, -d * math.log(d), gain) for d, gain in rows]
    saa = sum(a * a for a, _, _ in feats)
    sab = sum(a * b for a, b, _ in feats)
    sbb = sum(b * b for _, b, _ in feats)
    sag = sum(a * g for a, _, g in feats)
    sbg = sum(b * g for _, b, g in feats)
    det = saa * sbb - sab * sab
    if abs(det) < 1e-12 * max(saa * sbb, 1e-300):
        raise ValueError("the RL gold curve is not determined: every point is at the same KL")
    return (sag * sbb - sbg * sab) / det, (saa * sbg - sab * sag) / det


def rl_gold_curve(alpha: float, beta: float, kl: float) -> float:
    """The gain ``d·(α − β·ln d)`` of :func:`fit_rl_gold_curve` at ``kl`` (0 at KL 0)."""
    if kl <= 0:
        return 0.0
    d = math.sqrt(kl)
    return d * (alpha - beta * math.log(d))


def best_of_n_kl(n: int) -> float:
    """The analytic KL of best-of-n sampling to the sampler: log n − (n − 1)/n (Stiennon et al., 2020;
    Beirami et al., 2024 show it is an upper bound)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n ≥ 1, got {n}")
    return math.log(n) - (n - 1) / n
