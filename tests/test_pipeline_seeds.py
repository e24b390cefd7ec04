"""seeds=N: the policy-optimisation stages run once per seed from the same SFT model and reward model, each in
its own folder with its own seed, and the summary and reports give every seed and mean ± std; then
``tether frontier`` on the same folder reuses its upstream stages. Both start from the default pipeline that
tests/test_pipeline.py checks (the shared ``default_pipeline`` fixture), with short policy stages: this checks
the plumbing; the measured results are in docs/results.md."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from tether.config import FrontierConfig, PipelineConfig, load_config
from tether.eval.aggregate import best_of_n_kl, mean_std
from tether.frontier import run_frontier
from tether.pipeline import POLICY_STAGES, run_pipeline, seed_configs, stage_configs

# The second seed's policy stages, shortened (the first seed's are the shared default pipeline's).
SHORT = {
    "dpo": {"max_steps": 3},
    "ppo": {"max_steps": 3},
    "grpo": {"max_steps": 2},
    "ppo_no_kl": {"max_steps": 3},
}


def test_seed_configs_change_only_seed_and_folder(tmp_path):
    config = load_config(
        PipelineConfig, None, [f"output_dir={tmp_path}", "seed=3", "seeds=2", "ppo.kl_coef=0.3"]
    )
    configs = stage_configs(config)
    first, second = seed_configs(configs, 3, tmp_path), seed_configs(configs, 4, tmp_path)
    assert list(first) == list(second) == list(POLICY_STAGES)
    for name in POLICY_STAGES:
        assert first[name] is configs[name] and first[name].seed == 3
        assert second[name].seed == 4 and second[name].output_dir == str(tmp_path / "seed4" / name)
        assert second[name].model == first[name].model == str(tmp_path / "sft")  # the same SFT model
    assert second["ppo"].reward == str(tmp_path / "reward_model")
    assert second["ppo"].kl_coef == 0.3 and second["ppo_no_kl"].kl_coef == 0.0


@pytest.fixture(scope="module")
def two_seeds(default_pipeline, tmp_path_factory):
    # A copy of the shared pipeline's folder, so that the extra seed's folders and reports never change
    # what tests/test_pipeline.py reads, whichever runs first.
    shared, config, _ = default_pipeline
    root = tmp_path_factory.mktemp("seeds")
    shutil.copytree(shared, root, dirs_exist_ok=True)
    sections = {name: {**getattr(config, name), **short} for name, short in SHORT.items()}
    config = dataclasses.replace(config, output_dir=str(root), seeds=2, n_policy_prompts=24, **sections)
    return root, config, run_pipeline(config)


@pytest.mark.slow
def test_two_seeds_end_to_end(two_seeds):
    tmp_path, config, summary = two_seeds
    seeds = summary["seeds"]
    assert seeds["seeds"] == [0, 1]
    for name in POLICY_STAGES:
        saved = (tmp_path / "seed1" / name / "tether_config.yaml").read_text()
        assert "seed: 1" in saved.splitlines()
        assert (tmp_path / name / "tether_config.yaml").exists()
    runs = seeds["runs"]
    assert runs[0]["dpo"]["gold"] == summary["policies"]["dpo"]["gold"]  # the first seed is the usual table
    gold = [runs[s]["ppo"]["gold"] for s in (0, 1)]
    assert seeds["summary"]["ppo"]["gold"] == pytest.approx(list(mean_std(gold)))
    assert set(seeds["hacking"]) == {0, 1}
    assert seeds["hacking"][1]["final_gold"] == runs[1]["ppo_no_kl"]["gold"]
    report = (tmp_path / "report.md").read_text()
    assert "## Policies over 2 seeds (0, 1): mean ± std" in report
    assert f"| ppo | {gold_cell(seeds['summary']['ppo']['gold'])} |" in report
    page = (tmp_path / "report.html").read_text()
    assert "Over 2 seeds" in page and (tmp_path / "seeds.png").exists()
    assert json.loads((tmp_path / "evaluation.json").read_text())["seeds"]["seeds"] == [0, 1]
    # Re-run: every stage of every seed is done, only evaluation runs.
    assert set(run_pipeline(config)["seconds"]) == {"evaluate"}
    assert Path(tmp_path / "stage_seconds.json").exists()


def gold_cell(cell: list[float]) -> str:
    return f"{cell[0]:.3f} ± {cell[1]:.3f}"


@pytest.mark.slow
def test_frontier_reuses_the_pipeline_and_resumes(two_seeds):
    root, _, _ = two_seeds
    overrides = [
        f"output_dir={root}",
        "seeds=2",
        "methods=grpo,dpo",
        "betas=0.3,0.05",
        "best_of_n=2",
        "kl_points=0.5",
        "n_policy_prompts=8",
        "grpo.max_steps=1",
        "grpo.progress=false",
        "dpo.max_steps=2",
        "dpo.progress=false",
    ]
    upstream_seconds = json.loads((root / "stage_seconds.json").read_text())
    summary = run_frontier(load_config(FrontierConfig, None, overrides))
    assert (
        json.loads((root / "stage_seconds.json").read_text()) == upstream_seconds
    )  # nothing upstream re-ran
    out = root / "frontier"
    records = [json.loads(line) for line in (out / "frontier.jsonl").read_text().splitlines()]
    runs = [r for r in records if "method" in r]
    assert sorted((r["method"], r["beta"], r["seed"]) for r in runs) == sorted(
        (m, b, s) for m in ("grpo", "dpo") for b in (0.3, 0.05) for s in (0, 1)
    )
    assert sorted((r["n"], r["seed"]) for r in records if "n" in r) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(r["kl"] == best_of_n_kl(r["n"]) for r in records if "n" in r)
    assert (out / "dpo" / "beta0.05" / "seed1" / "tether_config.yaml").exists()
    assert summary["seeds"] == [0, 1]
    grpo = [r["gold"] for r in runs if r["method"] == "grpo" and r["beta"] == 0.3]
    assert summary["points"]["grpo"]["beta=0.3"]["gold"] == pytest.approx(list(mean_std(grpo)))
    assert (out / "frontier.png").exists() and "Gold reward at matched KL" in (
        out / "frontier.md"
    ).read_text()
    # Resume: every measurement is recorded, so a second call trains and measures nothing new.
    run_frontier(load_config(FrontierConfig, None, overrides))
    assert len((out / "frontier.jsonl").read_text().splitlines()) == len(records)


def test_hacking_check_needs_a_curve(tmp_path):
    from tether.pipeline import across_seeds

    folders = {}
    for seed, steps in ((0, 1), (1, 3)):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        rows = [{"step": i, "reward/score": float(i), "reward/gold": 0.5 - 0.2 * i} for i in range(steps)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        folders[seed] = {"ppo_no_kl": str(folder)}
    metrics = {"ppo": {"gold": 0.3}, "ppo_no_kl": {"gold": 0.1, "samples": [], "gold_scores": [0.1]}}
    result = across_seeds({0: metrics, 1: metrics}, folders)
    assert result["hacking"][0] is None  # one logged step: no curve to judge
    # Window 5 over gold [0.5, 0.3, 0.1] → [0.5, 0.4, 0.3]: peak 0.5, end 0.3; proxy 0 → 1.
    assert result["hacking"][1]["gold_falls_from_peak"] and result["hacking"][1]["holds"]
    assert "samples" not in result["runs"][0]["ppo_no_kl"]


def test_later_stages_follow_an_earlier_stage_moved_elsewhere(tmp_path):
    config = load_config(
        PipelineConfig,
        None,
        [
            f"output_dir={tmp_path}",
            f"pretrain.output_dir={tmp_path / 'lm'}",
            f"reward_model.output_dir={tmp_path / 'rm'}",
            f"reward_model.data={tmp_path / 'pairs.jsonl'}",
        ],
    )
    configs = stage_configs(config)
    assert configs["sft"].model == configs["pretrain_rnn"].tokenizer == str(tmp_path / "lm")
    assert configs["dpo"].data == str(tmp_path / "pairs.jsonl")  # DPO learns from the reward model's data
    assert configs["ppo"].reward == configs["grpo"].reward == str(tmp_path / "rm")
    assert configs["collect"].policy == configs["reward_model"].model == str(tmp_path / "sft")
