"""How far a judge can be trusted: agreement with gold labels on held-out pairs, and position bias.

Each pair is shown with a seeded coin deciding which response comes first, so a judge that always
picks (A) scores 50 %, not 100 %. For a pairwise LLM judge both orders are scored once, which gives:

- ``agreement/first_order``: the judge's pick from one order only (no swapping);
- ``agreement/swapped``: the pick from the average over both orders;
- ``position_bias_rate``: pairs where the judge picks the same position in both orders — its choice
  followed the slot, not the response;
- ``picks_first``: how often the single-order pick is the response shown first.

A scalar judge (reward model, rule, gold) has no order; it is compared by its scores.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from tether.judges.llm import PairwiseJudgement


def judge_agreement(
    judge: Any,
    prompts: Sequence[Any],
    chosen: Sequence[str],
    rejected: Sequence[str],
    seed: int = 0,
) -> dict[str, float]:
    """Agreement of ``judge`` with the labels ``chosen ≻ rejected`` (see the module docstring)."""
    rng = random.Random(seed)
    chosen_first = [rng.random() < 0.5 for _ in prompts]
    first = [c if f else r for c, r, f in zip(chosen, rejected, chosen_first)]
    second = [r if f else c for c, r, f in zip(chosen, rejected, chosen_first)]
    n = len(prompts)
    report: dict[str, float] = {"pairs": float(n)}
    if hasattr(judge, "judge"):
        judgement: PairwiseJudgement = judge.judge(prompts, first, second)
        single = judgement.as_first.tolist()
        report["agreement/first_order"] = _agreement(single, chosen_first)
        if judgement.swapped:
            report["agreement/swapped"] = _agreement(judgement.probability.tolist(), chosen_first)
            # P(first wins) shown first, and P(first wins) shown second: the same slot picked both times
            # means one is above ½ and the other below.
            report["position_bias_rate"] = sum(
                (a > 0.5) != (b > 0.5) for a, b in zip(single, judgement.as_second.tolist())
            ) / max(n, 1)
        report["picks_first"] = sum(p > 0.5 for p in single) / max(n, 1)
        return report
    scores_first, scores_second = judge.score(prompts, first), judge.score(prompts, second)
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_first, scores_second)]
    report["agreement/scores"] = _agreement(wins, chosen_first)
    return report


def _agreement(p_first: Sequence[float], chosen_first: Sequence[bool]) -> float:
    """Fraction of pairs where the judge's pick is the labelled one; an exact ½ counts half."""
    total = 0.0
    for p, first in zip(p_first, chosen_first):
        p_chosen = p if first else 1 - p
        total += 1.0 if p_chosen > 0.5 else 0.5 if p_chosen == 0.5 else 0.0
    return total / max(len(p_first), 1)
