"""The chained pipeline: pre-train → SFT → collect → reward model → DPO, PPO, GRPO and PPO without the KL
tether → evaluate → report, each stage an ordinary folder; beside them, an RNN language model pre-trained
briefly on the same corpus with the same tokenizer, for the report's ladder of language models
(n-gram → RNN → Transformer).

With ``seeds=N`` the policy-optimisation stages (``POLICY_STAGES``) and their evaluation run for N seeds
(the first in the usual folders, seed s under ``seed{s}/``), from the same SFT model and reward model; the
summary's ``seeds`` entry holds every seed's metrics, their mean ± std, and the reward-hacking check of
each seed's β = 0 run (``eval/aggregate.py``).

A stage whose folder already holds its finished output (``tether_config.yaml`` is written last) is skipped
on re-run; ``from_stage`` (``--from``) re-runs that stage and every later one. Each stage's time is kept in
``stage_seconds.json``, so the ladder's training times survive re-runs that skip the stage.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
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

# The RNN comes last of the training stages: it needs only pre-training's tokenizer, and `--from pretrain_rnn`
# then re-runs nothing else.
STAGES = (
    "pretrain",
    "sft",
    "collect",
    "reward_model",
    "dpo",
    "ppo",
    "grpo",
    "ppo_no_kl",
    "pretrain_rnn",
    "evaluate",
)

# The stages that seeds=N repeats (each from the same SFT model and reward model), and the policies evaluated.
POLICY_STAGES = ("dpo", "ppo", "grpo", "ppo_no_kl")
POLICIES = ("sft", *POLICY_STAGES)

# The embedded default: sized so the whole pipeline runs in a few minutes on a 2-core CPU.
DEFAULT_PRETRAIN = {"num_epochs": 1.0}
DEFAULT_SFT = {"num_epochs": 1.0}
# GRPO's KL loss term now pulls along ∇KL(π ‖ π_ref) itself (the k3 estimate alone did not): at β = 0.05 the
# pipeline's GRPO drifted to 15–36 nats depending on the reward model; β = 0.1 holds it nearer PPO and DPO.
DEFAULT_GRPO = {"kl_coef": 0.1}
# A 2.4M-parameter LSTM for ~100 steps (a few seconds; a third of an epoch): enough to see where it stands.
DEFAULT_PRETRAIN_RNN = {"max_steps": 100}


def _stage_config(cls: type, defaults: dict, overrides: dict, section: str, **fixed: Any) -> Any:
    return build_config(cls, {**defaults, **fixed, **overrides}, where=f"pipeline section '{section}'")


def is_done(folder: Path) -> bool:
    return (folder / "tether_config.yaml").exists()


def read_stage_seconds(root: Path) -> dict[str, float]:
    """The recorded time of every stage that has run in ``root`` ({} before the first)."""
    path = root / "stage_seconds.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def record_stage_seconds(root: Path, name: str, seconds: float) -> None:
    path = root / "stage_seconds.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**read_stage_seconds(root), name: seconds}, indent=2), encoding="utf-8")


def _total(seconds: dict[str, float], *stages: str) -> float | None:
    """The summed time of ``stages`` (None when one of them has no recorded time)."""
    return sum(seconds[s] for s in stages) if all(s in seconds for s in stages) else None


def _lm_label(name: str, config: Any) -> str:
    """How the report names a neural rung of the ladder."""
    if name == "rnn":
        return f"RNN ({config.cell.upper()}, {config.num_hidden_layers} × {config.hidden_size})"
    shape = f"{config.num_hidden_layers} layers × {config.hidden_size}"
    return (
        f"Transformer ({shape}), pre-trained" if name == "pretrained" else f"Transformer ({shape}) after SFT"
    )


def stage_configs(config: PipelineConfig) -> dict[str, Any]:
    """Every stage's config for the first seed, in ``STAGES`` order (``evaluate`` last). Each later stage
    reads the folders of the earlier ones from their configs, so a section's ``output_dir`` is followed."""
    root = Path(config.output_dir)
    data = f"gym:{config.task}"
    configs: dict[str, Any] = {}

    def add(name: str, cls: type, defaults: dict, **fixed: Any) -> Any:
        """Stage ``name``'s config: ``defaults``, then ``fixed``, then the pipeline section's overrides."""
        fixed = {"output_dir": str(root / name), "seed": config.seed, **fixed}
        configs[name] = _stage_config(cls, defaults, getattr(config, name), name, **fixed)
        return configs[name]

    pretrain = add("pretrain", PretrainConfig, DEFAULT_PRETRAIN, data=data)
    sft = add("sft", SFTConfig, DEFAULT_SFT, model=pretrain.output_dir, data=data).output_dir
    collect = add("collect", CollectConfig, {}, policy=sft, judge=data, prompts=data)
    rankings = str(Path(collect.output_dir) / "rankings.jsonl")
    reward_model = add("reward_model", RewardModelConfig, {}, model=sft, data=rankings)
    # DPO learns from the same preferences as the reward model (its data, if the user pointed it elsewhere).
    add("dpo", DPOConfig, {}, model=sft, data=reward_model.data)
    rl = {"model": sft, "reward": reward_model.output_dir, "gold": data, "prompts": data}
    add("ppo", PPOConfig, {}, **rl)
    add("grpo", PGConfig, DEFAULT_GRPO, **rl)
    # The same PPO without the KL tether: the report's reward-hacking comparison.
    add("ppo_no_kl", PPOConfig, {**config.ppo, "kl_coef": 0.0}, **rl)
    # The ladder's middle rung: same corpus, same tokenizer (pre-training's), same loss and optimiser.
    add(
        "pretrain_rnn",
        PretrainConfig,
        DEFAULT_PRETRAIN_RNN,
        data=data,
        architecture="rnn",
        tokenizer=pretrain.output_dir,
    )
    configs["evaluate"] = _stage_config(
        EvalConfig, {}, config.evaluate, "evaluate", task=config.task, seed=config.seed
    )
    return configs


def pipeline_seeds(config: PipelineConfig) -> list[int]:
    """The seeds of the policy-optimisation stages: ``seed``, ``seed + 1``, … (``seeds`` of them)."""
    return [config.seed + k for k in range(config.seeds)]


def seed_configs(configs: dict[str, Any], seed: int, root: Path) -> dict[str, Any]:
    """The policy-optimisation stages' configs for ``seed``: the first seed's as they are; another seed's
    with that seed and its own folder ``root/seed{seed}/NAME``."""
    if seed == configs["dpo"].seed:
        return {name: configs[name] for name in POLICY_STAGES}
    return {
        name: dataclasses.replace(configs[name], seed=seed, output_dir=str(root / f"seed{seed}" / name))
        for name in POLICY_STAGES
    }


def _runners() -> dict[str, Callable[[Any], Any]]:
    from tether.algorithms.collect import run_collect
    from tether.algorithms.dpo import run_dpo
    from tether.algorithms.policy_gradient import run_policy_gradient
    from tether.algorithms.ppo import run_ppo
    from tether.algorithms.pretrain import run_pretrain
    from tether.algorithms.reward_model import run_reward_model
    from tether.algorithms.sft import run_sft

    return {
        "pretrain": run_pretrain,
        "sft": run_sft,
        "collect": run_collect,
        "reward_model": run_reward_model,
        "dpo": run_dpo,
        "ppo": run_ppo,
        "grpo": run_policy_gradient,
        "ppo_no_kl": run_ppo,
        "pretrain_rnn": run_pretrain,
    }


def run_stages(runs: list[tuple[str, str, Any]], root: Path, rerun: set[str]) -> dict[str, float]:
    """Run each ``(label, stage, config)`` whose folder is not finished (or whose stage is in ``rerun``);
    return and record the seconds each took, under its label."""
    runners = _runners()
    timings = {}
    for label, name, stage_config in runs:
        folder = Path(stage_config.output_dir)
        if is_done(folder) and name not in rerun:
            tqdm.write(f"pipeline: {label} already done in {folder}; skipping (use --from {name} to re-run)")
            continue
        tqdm.write(f"pipeline: {label} → {folder}")
        started = time.perf_counter()
        runners[name](stage_config)
        timings[label] = time.perf_counter() - started
        record_stage_seconds(root, label, timings[label])
    return timings


def evaluate_policies(
    folders: dict[str, str], reference: Any, tokenizer: Any, gold: Any, proxy: Any, prompts: list, seed: int
) -> dict[str, dict[str, Any]]:
    """Gold reward (the hidden judge), proxy reward (the learned RM), KL to the SFT reference and win rate
    against the reference's samples under the gold judge, of each policy folder (``sft`` first)."""
    from tether.eval.metrics import win_rate
    from tether.eval.policy import evaluate_policy
    from tether.models import load_causal_lm

    policies = {}
    for name, folder in folders.items():
        policy = reference if name == "sft" else load_causal_lm(folder)
        policies[name] = evaluate_policy(policy, reference, tokenizer, gold, prompts, proxy=proxy, seed=seed)
    for metrics in policies.values():
        metrics["win_rate"] = win_rate(metrics["gold_scores"], policies["sft"]["gold_scores"])
    return policies


def evaluate_ladder(
    task: Any, configs: dict[str, Any], reference: Any, root: Path, seed: int
) -> dict[str, Any]:
    """The ladder of language models on the same held-out documents: the lectures' first language model (a
    word trigram fitted on the corpus), the RNN, and the Transformer before and after SFT."""
    from tether.eval.ladder import continuation_prompts, neural_rung, ngram_rung
    from tether.eval.metrics import NGramLM
    from tether.models import load_causal_lm, load_tokenizer

    evaluation = configs["evaluate"]
    heldout = task.pretrain_texts("eval", n=evaluation.n_examples)
    openings = continuation_prompts(heldout)
    fitting = time.perf_counter()
    ngram = NGramLM(task.pretrain_texts(), n=3)
    rungs = {"ngram": ngram_rung(ngram, heldout, openings, time.perf_counter() - fitting, seed)}
    rungs["ngram"]["label"] = "word trigram (add-0.1)"
    trained = read_stage_seconds(root)
    for name, stage, seconds in (
        ("rnn", "pretrain_rnn", trained.get("pretrain_rnn")),
        ("pretrained", "pretrain", trained.get("pretrain")),
        ("sft", "sft", _total(trained, "pretrain", "sft")),
    ):
        folder = configs[stage].output_dir
        model = reference if stage == "sft" else load_causal_lm(folder)
        rungs[name] = neural_rung(
            model, load_tokenizer(folder), heldout, openings, seconds, evaluation.batch_size, seed
        )
        rungs[name]["label"] = _lm_label(name, model.config)
    return {"heldout_documents": len(heldout), "models": rungs}


def across_seeds(
    per_seed: dict[int, dict[str, dict[str, Any]]], folders: dict[int, dict[str, str]]
) -> dict[str, Any]:
    """Every seed's policy metrics (lists and samples dropped), their mean ± std, and each seed's
    reward-hacking check of its β = 0 PPO run against its tethered PPO run."""
    from tether.engine.logging import read_metrics
    from tether.eval.aggregate import hacking_check, summarise_seeds

    runs = {
        seed: {
            name: {k: v for k, v in m.items() if k not in {"gold_scores", "samples"}}
            for name, m in policies.items()
        }
        for seed, policies in per_seed.items()
    }
    hacking = {}
    for seed, policies in per_seed.items():
        rows = read_metrics(Path(folders[seed]["ppo_no_kl"]) / "metrics.jsonl")
        # A run of one logged step has no curve to judge (None: the report shows a dash).
        hacking[seed] = (
            hacking_check(rows, policies["ppo_no_kl"]["gold"], policies["ppo"]["gold"])
            if sum("reward/gold" in r for r in rows) >= 2
            else None
        )
    return {"seeds": list(runs), "runs": runs, "summary": summarise_seeds(runs), "hacking": hacking}


def run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    """Run every stage not yet done (or from ``config.from_stage`` on); return the evaluation table."""
    from tether.eval.instruct import evaluate_instruct
    from tether.gym import get_task
    from tether.models import load_causal_lm, load_tokenizer
    from tether.specs import resolve_judge

    from_stage = config.from_stage or None
    if from_stage is not None and from_stage not in STAGES:
        raise TetherError(f"from_stage: unknown stage '{from_stage}'; choose one of {', '.join(STAGES)}")
    rerun = set(STAGES[STAGES.index(from_stage) :]) if from_stage else set()
    root = Path(config.output_dir)
    configs = stage_configs(config)
    seeds = pipeline_seeds(config)
    per_seed_configs = {seed: seed_configs(configs, seed, root) for seed in seeds}
    runs = [(name, name, configs[name]) for name in STAGES if name != "evaluate"]
    runs += [
        (f"{name}@seed{seed}", name, c) for seed in seeds[1:] for name, c in per_seed_configs[seed].items()
    ]
    timings = run_stages(runs, root, rerun)

    tqdm.write("pipeline: evaluate")
    started = time.perf_counter()
    task = get_task(config.task, seed=config.seed)
    evaluation = configs["evaluate"]
    results = {}
    for name in ("pretrained", "sft"):
        folder = configs["pretrain" if name == "pretrained" else "sft"].output_dir
        results[name] = evaluate_instruct(
            load_causal_lm(folder),
            load_tokenizer(folder),
            task,
            evaluation.n_examples,
            evaluation.n_prompts,
            evaluation.max_new_tokens,
            evaluation.batch_size,
        )
    sft = configs["sft"].output_dir
    gold = resolve_judge(f"gym:{config.task}", config.seed)
    proxy = resolve_judge(configs["reward_model"].output_dir)
    reference, tokenizer = load_causal_lm(sft), load_tokenizer(sft)
    prompts = task.prompts("eval", n=config.n_policy_prompts)
    folders = {
        seed: {"sft": sft, **{name: c.output_dir for name, c in per_seed_configs[seed].items()}}
        for seed in seeds
    }
    per_seed = {
        seed: evaluate_policies(folders[seed], reference, tokenizer, gold, proxy, prompts, seed)
        for seed in seeds
    }
    ladder = evaluate_ladder(task, configs, reference, root, config.seed)
    timings["evaluate"] = time.perf_counter() - started
    reward_eval = json.loads(
        (Path(configs["reward_model"].output_dir) / "eval.json").read_text(encoding="utf-8")
    )
    summary = {
        "task": config.task,
        "results": results,
        "reward_model": reward_eval,
        "policies": per_seed[seeds[0]],
        "seeds": across_seeds(per_seed, folders),
        "ladder": ladder,
        "seconds": timings,
        "efficiency": stage_efficiency(root, list(timings)),
    }
    (root / "evaluation.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return write_reports(summary, root, configs, folders)


def stage_efficiency(root: Path, labels: list[str]) -> dict[str, dict[str, float]]:
    """Each trained stage's tokens/s, model FLOP/s and MFU over its run (``engine/flops.py``): its last
    metrics row that has them."""
    from tether.engine.logging import read_metrics

    found = {}
    for label in labels:
        path = root / label / "metrics.jsonl"
        rows = [r for r in read_metrics(path) if r.get("mfu") is not None] if path.exists() else []
        if rows:
            found[label] = {k: rows[-1][k] for k in ("tokens_per_s", "model_tflops", "mfu")}
    return found


def write_reports(
    summary: dict[str, Any], root: Path, configs: dict[str, Any], folders: dict[int, dict[str, str]]
) -> dict[str, Any]:
    """``report.md`` and ``report.html`` beside the stage folders; returns ``summary``."""
    from tether.report import write_html_report, write_instruct_report

    report = write_instruct_report(summary, root)
    stage_dirs = {name: Path(c.output_dir) for name, c in configs.items() if name != "evaluate"}
    tethered, untethered = configs["ppo"].kl_coef, configs["ppo_no_kl"].kl_coef
    hacking = {}
    for seed, named in folders.items():
        prefix = f"seed {seed}: " if len(folders) > 1 else ""
        hacking[f"{prefix}PPO, β = {untethered:g}"] = Path(named["ppo_no_kl"])
        hacking[f"{prefix}PPO, β = {tethered:g}"] = Path(named["ppo"])
    page = write_html_report(summary, root, stage_dirs, hacking)
    tqdm.write(f"pipeline: report written to {report} and {page}")
    return summary
