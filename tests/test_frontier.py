"""tether frontier: the sweep's settings, each method's config at a β, and the summary at matched KL and within
a KL budget, on hand-made measurements (the end-to-end run is in tests/test_pipeline_seeds.py)."""

import pytest

from tether import TetherError
from tether.config import FrontierConfig, load_config
from tether.frontier import method_configs, parse_settings, run_config, summarise_frontier
from tether.report.frontier import frontier_tables


def test_settings_are_parsed_and_checked():
    settings = parse_settings(
        FrontierConfig(methods="dpo, grpo", betas="0.3,0.1", best_of_n="4,2", kl_points="3")
    )
    assert settings["methods"] == ["dpo", "grpo"] and settings["betas"] == [0.3, 0.1]
    assert settings["best_of_n"] == [1, 4, 2]  # n = 1 (the SFT policy) is always measured: the baseline
    assert settings["kl_points"] == [3.0] and settings["kl_budget"] == 5.0
    for bad, message in (
        ({"methods": "ppo,kto"}, "unknown ['kto']"),
        ({"betas": "0.1,x"}, "field 'betas'"),
        ({"betas": "0.1,0"}, "must be > 0"),
        ({"best_of_n": "0"}, "n must be ≥ 1"),
    ):
        with pytest.raises(TetherError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_settings(FrontierConfig(**bad))


def test_each_method_sets_its_own_beta_seed_and_folder(tmp_path):
    config = load_config(
        FrontierConfig, None, [f"output_dir={tmp_path}", "grpo.max_steps=7", "rloo.group_size=6"]
    )
    upstream, bases = method_configs(config)
    assert list(upstream) == ["pretrain", "sft", "collect", "reward_model"]
    assert bases["rloo"].estimator == "rloo" and bases["rloo"].group_size == 6
    assert bases["rloo"].max_steps == bases["grpo"].max_steps == 7  # RLOO starts from GRPO's section
    assert bases["grpo"].estimator == "grpo"
    out = tmp_path / "frontier"
    dpo = run_config(bases["dpo"], "dpo", 0.25, 2, out)
    ppo = run_config(bases["ppo"], "ppo", 0.25, 2, out)
    assert dpo.beta == 0.25 and ppo.kl_coef == 0.25 and dpo.seed == ppo.seed == 2
    assert ppo.output_dir == str(out / "ppo" / "beta0.25" / "seed2")
    assert dpo.model == ppo.model == str(tmp_path / "sft") and ppo.reward == str(tmp_path / "reward_model")
    # the frontier's PPO: its own critic for 150 iterations, under the section's overrides
    assert (bases["ppo"].critic, bases["ppo"].max_steps) == ("model", 150)
    mine = method_configs(load_config(FrontierConfig, None, ["ppo.max_steps=40"]))[1]["ppo"]
    assert (mine.critic, mine.max_steps) == ("model", 40)


def test_summary_matched_kl_and_budget():
    records = [
        # seed 0: best-of-1 (the SFT policy) scores 0.2; DPO reaches 0.7 at KL 4 and 0.9 at KL 8.
        {"n": 1, "seed": 0, "gold": 0.2, "kl": 0.0, "proxy": 0.0},
        {"n": 1, "seed": 1, "gold": 0.0, "kl": 0.0, "proxy": 0.0},
        {"method": "dpo", "beta": 0.4, "seed": 0, "gold": 0.5, "kl": 2.0, "proxy": 1.0},
        {"method": "dpo", "beta": 0.1, "seed": 0, "gold": 0.7, "kl": 4.0, "proxy": 2.0},
        {"method": "dpo", "beta": 0.05, "seed": 0, "gold": 0.9, "kl": 8.0, "proxy": 3.0},
        {"method": "dpo", "beta": 0.4, "seed": 1, "gold": 0.3, "kl": 1.0, "proxy": 1.0},
        {"method": "dpo", "beta": 0.1, "seed": 1, "gold": 0.5, "kl": 6.0, "proxy": 2.0},
        {"method": "dpo", "beta": 0.05, "seed": 1, "gold": 0.6, "kl": 9.0, "proxy": 3.0},
    ]
    settings = {
        "methods": ["dpo"],
        "betas": [0.4, 0.1, 0.05],
        "best_of_n": [1],
        "kl_points": [3.0, 7.0],
        "kl_budget": 5.0,
    }
    summary = summarise_frontier(records, settings, [0, 1])
    assert summary["points"]["dpo"]["beta=0.4"]["kl"] == pytest.approx([1.5, 0.5**0.5])
    # KL 3: seed 0 between (2, 0.5) and (4, 0.7) → 0.6; seed 1 between (1, 0.3) and (6, 0.5) → 0.38.
    three = summary["matched_kl"]["dpo"]["3"]
    assert three["seeds"] == 2 and three["gold"][0] == pytest.approx(0.49)
    # KL 7: seed 0 between (4, 0.7) and (8, 0.9) → 0.85; seed 1 between (6, 0.5) and (9, 0.6) → 0.5 + 0.1/3.
    assert summary["matched_kl"]["dpo"]["7"]["gold"][0] == pytest.approx((0.85 + 0.5 + 0.1 / 3) / 2)
    # Below its smallest KL a curve starts at the SFT policy: KL 0.5 on seed 1 lies between (0, 0.0) and
    # (1, 0.3) → 0.15; on seed 0 between (0, 0.2) and (2, 0.5) → 0.275.
    settings = {**settings, "kl_points": [0.5]}
    low = summarise_frontier(records, settings, [0, 1])["matched_kl"]["dpo"]["0.5"]
    assert low["seeds"] == 2 and low["gold"][0] == pytest.approx((0.15 + 0.275) / 2)
    budget = summary["within_budget"]["dpo"]
    assert budget[0]["gold"] == 0.7 and budget[0]["gap_closed"] == pytest.approx((0.7 - 0.2) / 0.8)
    assert budget[1]["gold"] == 0.3 and budget[1]["gap_closed"] == pytest.approx(0.3)
    text = "\n".join(frontier_tables(summary))
    assert "| dpo | 0.700 at KL 4.0 (β 0.1): 62% | 0.300 at KL 1.0 (β 0.4): 30% |" in text
    assert "| dpo | 0.490 ± 0.156 (n=2) |" in text
