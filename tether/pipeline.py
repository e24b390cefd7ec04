"""The chained pipeline: pre-train → SFT → evaluate → report, each stage an ordinary folder.

A stage whose folder already holds a finished model (``tether_config.yaml`` is written last) is skipped
on re-run; ``from_stage`` re-runs that stage and every later one. Later issues add collect, reward model
and the policy optimisers between SFT and evaluation.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tether import TetherError
from tether.config import EvalConfig, PipelineConfig, PretrainConfig, SFTConfig, build_config

STAGES = ("pretrain", "sft", "evaluate")

# The embedded default: sized so the whole pipeline runs in a few minutes on a 2-core CPU.
DEFAULT_PRETRAIN = {"num_epochs": 1.0}
DEFAULT_SFT = {"num_epochs": 1.0}


def _stage_config(cls: type, defaults: dict, overrides: dict, section: str, **fixed: Any) -> Any:
    return build_config(cls, {**defaults, **fixed, **overrides}, where=f"pipeline section '{section}'")


def is_done(folder: Path) -> bool:
    return (folder / "tether_config.yaml").exists() and (folder / "config.json").exists()


def run_pipeline(config: PipelineConfig, from_stage: str | None = None) -> dict[str, Any]:
    """Run every stage not yet done (or from ``from_stage`` on); return the evaluation table."""
    from tether.algorithms.pretrain import run_pretrain
    from tether.algorithms.sft import run_sft
    from tether.eval.instruct import evaluate_instruct
    from tether.gym import get_task
    from tether.models import load_causal_lm, load_tokenizer
    from tether.report import write_instruct_report

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
    evaluation = _stage_config(
        EvalConfig, {}, config.evaluate, "evaluate", task=config.task, seed=config.seed
    )
    timings: dict[str, float] = {}

    for name, stage_config, runner in (("pretrain", pretrain, run_pretrain), ("sft", sft, run_sft)):
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
    timings["evaluate"] = time.perf_counter() - started
    summary = {"task": config.task, "results": results, "seconds": timings}
    (root / "evaluation.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    report = write_instruct_report(summary, root)
    tqdm.write(f"pipeline: report written to {report}")
    return summary
