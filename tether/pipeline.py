"""The chained pipeline: pre-train → SFT → collect → reward model → DPO, PPO, GRPO and PPO without the KL
tether → evaluate → report, each stage an ordinary folder; beside them, an RNN language model pre-trained
briefly on the same corpus with the same tokenizer, for the report's ladder of language models
(n-gram → RNN → Transformer).

A stage whose folder already holds its finished output (``tether_config.yaml`` is written last) is skipped
on re-run; ``from_stage`` (``--from``) re-runs that stage and every later one. Each stage's time is kept in
``stage_seconds.json``, so the ladder's training times survive re-runs that skip the stage.
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


def run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    """Run every stage not yet done (or from ``config.from_stage`` on); return the evaluation table."""
    from tether.algorithms.collect import run_collect
    from tether.algorithms.dpo import run_dpo
    from tether.algorithms.policy_gradient import run_policy_gradient
    from tether.algorithms.ppo import run_ppo
    from tether.algorithms.pretrain import run_pretrain
    from tether.algorithms.reward_model import run_reward_model
    from tether.algorithms.sft import run_sft
    from tether.eval.instruct import evaluate_instruct
    from tether.eval.ladder import continuation_prompts, neural_rung, ngram_rung
    from tether.eval.metrics import NGramLM, win_rate
    from tether.eval.policy import evaluate_policy
    from tether.gym import get_task
    from tether.models import load_causal_lm, load_tokenizer
    from tether.report import write_html_report, write_instruct_report
    from tether.specs import resolve_judge

    from_stage = config.from_stage or None
    if from_stage is not None and from_stage not in STAGES:
        raise TetherError(f"from_stage: unknown stage '{from_stage}'; choose one of {', '.join(STAGES)}")
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
    grpo = _stage_config(
        PGConfig, DEFAULT_GRPO, config.grpo, "grpo", output_dir=str(root / "grpo"), **rl_fixed
    )
    # The same PPO without the KL tether: the report's reward-hacking comparison.
    ppo_no_kl = _stage_config(
        PPOConfig,
        {**config.ppo, "kl_coef": 0.0},
        config.ppo_no_kl,
        "ppo_no_kl",
        output_dir=str(root / "ppo_no_kl"),
        **rl_fixed,
    )
    # The ladder's middle rung: same corpus, same tokenizer (pre-training's), same loss and optimiser.
    pretrain_rnn = _stage_config(
        PretrainConfig,
        DEFAULT_PRETRAIN_RNN,
        config.pretrain_rnn,
        "pretrain_rnn",
        output_dir=str(root / "pretrain_rnn"),
        data=data,
        seed=config.seed,
        architecture="rnn",
        tokenizer=pretrain.output_dir,
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
        ("pretrain_rnn", pretrain_rnn, run_pretrain),
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
        record_stage_seconds(root, name, timings[name])

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
    # The ladder of language models on the same held-out documents: the lectures' first language model (a
    # word trigram fitted on the corpus), the RNN, and the Transformer before and after SFT.
    heldout = task.pretrain_texts("eval", n=evaluation.n_examples)
    openings = continuation_prompts(heldout)
    fitting = time.perf_counter()
    ngram = NGramLM(task.pretrain_texts(), n=3)
    rungs = {"ngram": ngram_rung(ngram, heldout, openings, time.perf_counter() - fitting, config.seed)}
    rungs["ngram"]["label"] = "word trigram (add-0.1)"
    trained = read_stage_seconds(root)
    for name, folder, seconds in (
        ("rnn", pretrain_rnn.output_dir, trained.get("pretrain_rnn")),
        ("pretrained", pretrain.output_dir, trained.get("pretrain")),
        ("sft", sft.output_dir, _total(trained, "pretrain", "sft")),
    ):
        model = reference if folder == sft.output_dir else load_causal_lm(folder)
        rungs[name] = neural_rung(
            model, load_tokenizer(folder), heldout, openings, seconds, evaluation.batch_size, config.seed
        )
        rungs[name]["label"] = _lm_label(name, model.config)
    ladder = {"heldout_documents": len(heldout), "models": rungs}
    timings["evaluate"] = time.perf_counter() - started
    reward_eval = json.loads((Path(reward_model.output_dir) / "eval.json").read_text(encoding="utf-8"))
    summary = {
        "task": config.task,
        "results": results,
        "reward_model": reward_eval,
        "policies": policies,
        "ladder": ladder,
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
