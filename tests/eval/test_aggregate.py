"""Per-seed summaries, the reward-hacking check and gold at matched KL, against values worked out by hand."""

import math

import pytest

from tether.eval.aggregate import (
    best_of_n_kl,
    fit_rl_gold_curve,
    gold_at_kl,
    hacking_check,
    mean_std,
    rl_gold_curve,
    smoothed,
    summarise_seeds,
)


def test_mean_and_sample_standard_deviation():
    # [1, 2, 4]: mean 7/3; squared deviations 16/9 + 1/9 + 25/9 = 42/9; / (n − 1) = 7/3.
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(math.sqrt(7 / 3))
    assert mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_summarise_seeds_per_policy_and_column():
    runs = {
        0: {"sft": {"gold": 0.0, "kl": 0.0}, "dpo": {"gold": 0.6, "kl": 4.0, "win_rate": 0.7}},
        1: {"sft": {"gold": 0.2, "kl": 0.0}, "dpo": {"gold": 0.8, "kl": 6.0, "win_rate": 0.9}},
    }
    summary = summarise_seeds(runs)
    assert list(summary) == ["sft", "dpo"]
    assert summary["sft"]["gold"] == pytest.approx([0.1, math.sqrt(0.02)])
    assert summary["dpo"]["kl"] == pytest.approx([5.0, math.sqrt(2.0)])
    assert summary["dpo"]["win_rate"] == pytest.approx([0.8, math.sqrt(0.02)])
    assert list(summary["dpo"]) == ["gold", "win_rate", "kl"]  # COLUMNS order; absent columns left out


def test_trailing_moving_average():
    assert smoothed([1, 2, 3, 4, 5], 2) == [1, 1.5, 2.5, 3.5, 4.5]
    assert smoothed([3, 0, 3], 5) == [3, 1.5, 2]


def rows(proxy, gold):
    return [{"step": i, "reward/score": p, "reward/gold": g} for i, (p, g) in enumerate(zip(proxy, gold))]


def test_hacking_check_holds_when_proxy_rises_and_gold_falls_from_its_peak():
    # Window 1: the raw curves. Gold peaks at 0.5 and ends at 0.2 (drop 0.3 ≥ 0.1); proxy 0 → 3.
    check = hacking_check(rows([0, 1, 2, 3], [0.1, 0.5, 0.3, 0.2]), 0.15, 0.4, window=1)
    assert check["gold_peak"] == 0.5 and check["gold_end"] == 0.2
    assert check["proxy_rises"] and check["gold_falls_from_peak"] and check["below_tethered"]
    assert check["holds"]
    # Gold still climbing at the end: no drop from the peak, so no hacking (even though it ends lower held out).
    assert not hacking_check(rows([0, 1, 2, 3], [0.1, 0.2, 0.3, 0.4]), 0.1, 0.4, window=1)["holds"]
    # A drop of 0.05 is not "clearly below".
    assert not hacking_check(rows([0, 1, 2], [0.3, 0.35, 0.3]), 0.1, 0.4, window=1)["gold_falls_from_peak"]
    # Ends above the tethered run: not hacking in the report's sense.
    assert not hacking_check(rows([0, 1, 2, 3], [0.1, 0.5, 0.3, 0.2]), 0.5, 0.4, window=1)["holds"]
    # Window 2 smooths [0.1, 0.5, 0.3, 0.2] to [0.1, 0.3, 0.4, 0.25]: peak 0.4, end 0.25.
    smooth = hacking_check(rows([0, 1, 2, 3], [0.1, 0.5, 0.3, 0.2]), 0.15, 0.4, window=2)
    assert smooth["gold_peak"] == pytest.approx(0.4) and smooth["gold_end"] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        hacking_check(rows([0], [0]), 0, 0)


def test_gold_at_kl_interpolates_inside_the_measured_range_only():
    points = [(4.0, 0.6), (1.0, 0.3), (8.0, 0.7), (1.0, 0.1)]  # two points at KL 1 average to 0.2
    assert gold_at_kl(points, 1.0) == pytest.approx(0.2)
    assert gold_at_kl(points, 2.5) == pytest.approx(0.2 + 0.4 * 1.5 / 3)
    assert gold_at_kl(points, 6.0) == pytest.approx(0.65)
    assert gold_at_kl(points, 0.5) is None and gold_at_kl(points, 9.0) is None
    assert gold_at_kl([(3.0, 0.4)], 3.0) == 0.4
    assert gold_at_kl([], 1.0) is None


def test_the_rl_gold_curve_is_fitted_in_gao_et_al_form():
    # g(d) = d(α − β ln d), d = √KL; α = 0.5, β = 0.2. At KL 1 (d 1, ln d 0) g = α = 0.5; at KL e² (d e,
    # ln d 1) g = e·(α − β) = 0.3e; at KL e⁴ (d e², ln d 2) g = e²·(α − 2β) = 0.1e².
    e = math.e
    exact = [(1.0, 0.5), (e**2, 0.3 * e), (e**4, 0.1 * e**2)]
    assert fit_rl_gold_curve(exact) == pytest.approx((0.5, 0.2))
    # Noise symmetric about the curve at one KL (0.5 ± 0.1 at KL 1) leaves the least-squares fit there;
    # the SFT point (KL 0, gain 0) lies on every such curve and is ignored.
    noisy = [(0.0, 0.0), (1.0, 0.4), (1.0, 0.6), (e**2, 0.3 * e)]
    assert fit_rl_gold_curve(noisy) == pytest.approx((0.5, 0.2))
    assert rl_gold_curve(0.5, 0.2, e**2) == pytest.approx(0.3 * e)
    assert rl_gold_curve(0.5, 0.2, 0.0) == 0.0
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_rl_gold_curve([(0.0, 0.0), (4.0, 0.5)])
    with pytest.raises(ValueError, match="same KL"):
        fit_rl_gold_curve([(4.0, 0.5), (4.0, 0.6)])


def test_best_of_n_kl_closed_form():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    with pytest.raises(ValueError):
        best_of_n_kl(0)
