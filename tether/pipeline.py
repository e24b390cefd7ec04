"""The chained pipeline: pre-train → SFT → collect → reward model → DPO, PPO, GRPO and PPO without the KL
tether → evaluate → report, each stage an ordinary folder.

A stage whose folder already holds its finished output (``tether_config.yaml`` is written last) is skipped
on re-run; ``from_stage`` re-runs that stage and every later one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tether import TetherError
from tether.config import (
    CollectConfig,
    DPOConfig,
    EvalConfig,
    PGConfig,
    PipelineConfig,
    PPOConfig,
    PretrainConfig,
    RewardModelConfig,
    SFTConfig,
    build_config,
)

STAGES = ("pretrain", "sft", "collect", "reward_model", "dpo", "ppo", "grpo", "ppo_no_kl", "evaluate")

# The embedded default: sized so the whole pipeline runs in a few minutes on a 2-core CPU.
DEFAULT_PRETRAIN = {"num_epochs": 1.0}
DEFAULT_SFT = {"num_epochs": 1.0}


def _stage_config(cls: type, defaults: dict, overrides: dict, section: str, **fixed: Any) -> Any:
    return build_config(cls, {**defaults, **fixed, **overrides}, where=f"pipeline section '{section}'")


def is_done(folder: Path) -> bool:
    return (folder / "tether_config.yaml").exists()


def run_pipeline(config: PipelineConfig, from_stage: str | None = None) -> dict[str, Any]:
    """Run every stage not yet done (or from ``from_stage`` on); return the evaluation table."""
    from tether.algorithms.collect import run_collect
    from tether.algorithms.common import resolve_judge
    from tether.algorithms.dpo import run_dpo
    from tether.algorithms.policy_gradient import run_policy_gradient
    from tether.algorithms.ppo import run_ppo
    from tether.algorithms.pretrain import run_pretrain
    from tether.algorithms.reward_model import run_reward_model
    from tether.algorithms.sft import run_sft
    from tether.eval.instruct import evaluate_instruct
    from tether.eval.metrics import NGramLM, win_rate
    from tether.eval.policy import evaluate_policy
    from tether.gym import get_task
    from tether.models import load_causal_lm, load_tokenizer
    from tether.report import write_html_report, write_instruct_report

    if from_stage is not None and from_stage not in STAGES:
        raise TetherError(f"--from: unknown stage '{from_stage}'; choose one of {', '.join(STAGES)}")
    rerun = set(STAGES[STAGES.index(from_stage) :]) if from_stage else set()
    root = Path(config.output_dir)
    data = f"gym:{config.task}"
    pretrain = _stage_config(
        PretrainConfig,
        DEFAULT_PRETRAIN,
        config.pretrain,
        "pretrain",
        output_dir=str(root / "pretrain"),
        data=data,
        seed=config.seed,
    )
    sft = _stage_config(
        SFTConfig,
        DEFAULT_SFT,
        config.sft,
        "sft",
        output_dir=str(root / "sft"),
        model=pretrain.output_dir,
        data=data,
        seed=config.seed,
    )
    collect = _stage_config(
        CollectConfig,
        {},
        config.collect,
        "collect",
        output_dir=str(root / "collect"),
        policy=sft.output_dir,
        judge=f"gym:{config.task}",
        prompts=data,
        seed=config.seed,
    )
    reward_model = _stage_config(
        RewardModelConfig,
        {},
        config.reward_model,
        "reward_model",
        output_dir=str(root / "reward_model"),
        model=sft.output_dir,
        data=str(Path(collect.output_dir) / "rankings.jsonl"),
        seed=config.seed,
    )
    dpo = _stage_config(
        DPOConfig,
        {},
        config.dpo,
        "dpo",
        output_dir=str(root / "dpo"),
        model=sft.output_dir,
        data=reward_model.data,
        seed=config.seed,
    )
    rl_fixed = {
        "model": sft.output_dir,
        "reward": reward_model.output_dir,
        "gold": data,
        "prompts": data,
        "seed": config.seed,
    }
    ppo = _stage_config(PPOConfig, {}, config.ppo, "ppo", output_dir=str(root / "ppo"), **rl_fixed)
    grpo = _stage_config(PGConfig, {}, config.grpo, "grpo", output_dir=str(root / "grpo"), **rl_fixed)
    # The same PPO without the KL tether: the report's reward-hacking comparison.
    ppo_no_kl = _stage_config(
        PPOConfig,
        {**config.ppo, "kl_coef": 0.0},
        config.ppo_no_kl,
        "ppo_no_kl",
        output_dir=str(root / "ppo_no_kl"),
        **rl_fixed,
    )
    evaluation = _stage_config(
        EvalConfig, {}, config.evaluate, "evaluate", task=config.task, seed=config.seed
    )
    timings: dict[str, float] = {}

    stages = (
        ("pretrain", pretrain, run_pretrain),
        ("sft", sft, run_sft),
        ("collect", collect, run_collect),
        ("reward_model", reward_model, run_reward_model),
        ("dpo", dpo, run_dpo),
        ("ppo", ppo, run_ppo),
        ("grpo", grpo, run_policy_gradient),
        ("ppo_no_kl", ppo_no_kl, run_ppo),
    )
    for name, stage_config, runner in stages:
        folder = Path(stage_config.output_dir)
        if is_done(folder) and name not in rerun:
            tqdm.write(f"pipeline: {name} already done in {folder}; skipping (use --from {name} to re-run)")
            continue
        tqdm.write(f"pipeline: {name} → {folder}")
        started = time.perf_counter()
        runner(stage_config)
        timings[name] = time.perf_counter() - started

    tqdm.write("pipeline: evaluate")
    started = time.perf_counter()
    task = get_task(config.task, seed=config.seed)
    results = {}
    for name, folder in (("pretrained", pretrain.output_dir), ("sft", sft.output_dir)):
        model, tokenizer = load_causal_lm(folder), load_tokenizer(folder)
        results[name] = evaluate_instruct(
            model,
            tokenizer,
            task,
            evaluation.n_examples,
            evaluation.n_prompts,
            evaluation.max_new_tokens,
            evaluation.batch_size,
        )
    # The policies: gold reward (hidden judge), proxy reward (the learned RM) and KL to the SFT reference.
    gold = resolve_judge(f"gym:{config.task}", config.seed)
    proxy = resolve_judge(reward_model.output_dir)
    reference, tokenizer = load_causal_lm(sft.output_dir), load_tokenizer(sft.output_dir)
    prompts = task.prompts("eval", n=config.n_policy_prompts)
    policies = {}
    for name, folder in (
        ("sft", sft.output_dir),
        ("dpo", dpo.output_dir),
        ("ppo", ppo.output_dir),
        ("grpo", grpo.output_dir),
        ("ppo_no_kl", ppo_no_kl.output_dir),
    ):
        policy = reference if folder == sft.output_dir else load_causal_lm(folder)
        policies[name] = evaluate_policy(
            policy, reference, tokenizer, gold, prompts, proxy=proxy, seed=config.seed
        )
    for metrics in policies.values():  # win rate against the reference's samples, under the gold judge
        metrics["win_rate"] = win_rate(metrics["gold_scores"], policies["sft"]["gold_scores"])
    # The lectures' first language model as a yardstick: a word trigram model fitted on the corpus.
    ngram = NGramLM(task.pretrain_texts(), n=3)
    responses = [e["messages"][-1]["content"] for e in task.sft_examples("eval")[: evaluation.n_examples]]
    results["ngram"] = {"response_ppl_per_word": ngram.perplexity(responses)}
    timings["evaluate"] = time.perf_counter() - started
    reward_eval = json.loads((Path(reward_model.output_dir) / "eval.json").read_text(encoding="utf-8"))
    summary = {
        "task": config.task,
        "results": results,
        "reward_model": reward_eval,
        "policies": policies,
        "seconds": timings,
    }
    (root / "evaluation.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    report = write_instruct_report(summary, root)
    stage_dirs = {s.output_dir.rsplit("/", 1)[-1]: Path(s.output_dir) for _, s, _ in stages}
    hacking = {
        f"PPO, β = {ppo_no_kl.kl_coef:g}": Path(ppo_no_kl.output_dir),
        f"PPO, β = {ppo.kl_coef:g}": Path(ppo.output_dir),
    }
    page = write_html_report(summary, root, stage_dirs, hacking)
    tqdm.write(f"pipeline: report written to {report} and {page}")
    return summary
