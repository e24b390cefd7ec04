"""The command line: ``tether STAGE [--config FILE] [key=value …]``.

Every stage takes a YAML config and ``key=value`` overrides; ``tether STAGE --help`` lists every field with
its help text and default. Errors in data, configs or models print one line naming the file, line and field,
and exit with status 2 — no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tether import TetherError, __version__
from tether.config import (
    BestOfNConfig,
    CollectConfig,
    CompareConfig,
    CritiqueReviseConfig,
    DistributionMatchingConfig,
    DPOConfig,
    EvalConfig,
    IterativeDPOConfig,
    JudgeAgreementConfig,
    KTOConfig,
    NashMDConfig,
    OnlineDPOConfig,
    PGConfig,
    PipelineConfig,
    PPOConfig,
    PretrainConfig,
    RewardModelConfig,
    RFTConfig,
    ScoreConfig,
    SFTConfig,
    describe,
    load_config,
)
from tether.engine.allocator import configure_allocator


def _evaluate(config: EvalConfig, args: argparse.Namespace) -> Any:
    from tether.eval.instruct import evaluate_instruct
    from tether.gym import get_task
    from tether.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(config.model, config.trust_remote_code)
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    metrics = evaluate_instruct(
        model,
        tokenizer,
        get_task(config.task, config.seed),
        config.n_examples,
        config.n_prompts,
        config.max_new_tokens,
        config.batch_size,
    )
    if config.output:
        from tether.data.readers import write_jsonl

        write_jsonl(config.output, [metrics])
    return metrics


def _reward_model(config: RewardModelConfig, args: argparse.Namespace) -> Any:
    from tether.algorithms.reward_model import run_reward_model

    metrics = run_reward_model(config)
    return {k: v for k, v in metrics.items() if k != "calibration"}


def _score(config: ScoreConfig, args: argparse.Namespace) -> Any:
    from tether.data.preference import text_or_messages
    from tether.data.readers import read_records, write_jsonl
    from tether.specs import resolve_judge

    if not config.data:
        raise TetherError("score: set data=FILE (records with 'prompt' and 'completion')")
    records = read_records(config.data)
    prompts = [text_or_messages(r, "prompt") for r in records]
    completions = [text_or_messages(r, "completion") for r in records]
    judge = resolve_judge(config.judge, trust_remote_code=config.trust_remote_code)
    scores = judge.score(prompts, completions)
    if config.output:
        write_jsonl(config.output, ({**r.data, "score": s} for r, s in zip(records, scores)))
    return {"records": len(scores), "mean_score": sum(scores) / max(1, len(scores))}


def _judge_agreement(config: JudgeAgreementConfig, args: argparse.Namespace) -> Any:
    from tether.data.preference import load_pairs
    from tether.data.readers import read_records, write_jsonl
    from tether.eval.judge import judge_agreement
    from tether.specs import resolve_judge

    if not config.judge or not config.pairs:
        raise TetherError(
            "judge-agreement: set judge=… and pairs=FILE (records with prompt, chosen, rejected)"
        )
    pairs = load_pairs(read_records(config.pairs))[: config.n_pairs]
    prompts, chosen, rejected = (
        [p.prompt for p in pairs],
        [p.chosen for p in pairs],
        [p.rejected for p in pairs],
    )
    dropped = 0
    if config.gold:
        gold = resolve_judge(config.gold, config.seed)
        first, second = gold.score(prompts, chosen), gold.score(prompts, rejected)
        keep = [i for i, (a, b) in enumerate(zip(first, second)) if a != b]
        dropped = len(pairs) - len(keep)
        swapped = [first[i] < second[i] for i in keep]
        prompts = [prompts[i] for i in keep]
        chosen, rejected = (
            [rejected[i] if s else chosen[i] for i, s in zip(keep, swapped)],
            [chosen[i] if s else rejected[i] for i, s in zip(keep, swapped)],
        )
    judge = resolve_judge(config.judge, config.seed, config.trust_remote_code)
    report = {**judge_agreement(judge, prompts, chosen, rejected, config.seed), "gold_ties_dropped": dropped}
    if config.output:
        write_jsonl(config.output, [report])
    return report


def _policy_gradient(estimator: str) -> Callable[[PGConfig, argparse.Namespace], Any]:
    def run(config: PGConfig, args: argparse.Namespace) -> Any:
        from tether.algorithms.policy_gradient import run_policy_gradient

        # The command picks the estimator unless estimator=… chose another than the default.
        chosen = estimator if config.estimator == "grpo" else config.estimator
        return run_policy_gradient(dataclasses.replace(config, estimator=chosen))

    return run


def _distribution_matching(method: str) -> Callable[[DistributionMatchingConfig, argparse.Namespace], Any]:
    def run(config: DistributionMatchingConfig, args: argparse.Namespace) -> Any:
        from tether.algorithms.distribution_matching import run_distribution_matching

        return run_distribution_matching(dataclasses.replace(config, method=method))

    return run


def _compare(config: CompareConfig, args: argparse.Namespace) -> Any:
    from tether.eval.metrics import win_rate
    from tether.eval.policy import evaluate_policy
    from tether.models import load_causal_lm, load_tokenizer
    from tether.specs import load_prompts, resolve_judge

    prompts = load_prompts(config.prompts, config.n_prompts, config.seed, split="eval")
    judge = resolve_judge(config.judge, config.seed, config.trust_remote_code)
    reference = load_causal_lm(config.reference, config.trust_remote_code)
    tokenizer = load_tokenizer(config.reference, config.trust_remote_code)
    policy = load_causal_lm(config.policy, config.trust_remote_code)
    runs = {}
    for name, model in (("reference", reference), ("policy", policy)):
        runs[name] = evaluate_policy(
            model,
            reference,
            tokenizer,
            judge,
            prompts,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            batch_size=config.batch_size,
            seed=config.seed,
        )
    result = {
        "win_rate": win_rate(runs["policy"]["gold_scores"], runs["reference"]["gold_scores"]),
        **{
            f"{name}/{key}": value
            for name, m in runs.items()
            for key, value in m.items()
            if key not in {"gold_scores", "samples"}
        },
        "samples": runs["policy"]["samples"],
    }
    if config.output:
        Path(config.output).parent.mkdir(parents=True, exist_ok=True)
        Path(config.output).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def _pipeline(config: PipelineConfig, args: argparse.Namespace) -> Any:
    from tether.pipeline import run_pipeline

    summary = run_pipeline(config, from_stage=args.from_stage)
    return {name: {k: v for k, v in m.items() if k != "samples"} for name, m in summary["results"].items()}


def _stage(target: str) -> Callable[[Any, argparse.Namespace], Any]:
    """Run ``module:function`` on the config; the module is imported only when its command runs."""

    def run(config: Any, args: argparse.Namespace) -> Any:
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(module), function)(config)

    return run


COMMANDS: dict[str, tuple[type, Callable[[Any, argparse.Namespace], Any], str]] = {
    "pipeline": (PipelineConfig, _pipeline, "Run the whole pipeline on a gym task (the main job)."),
    "pretrain": (
        PretrainConfig,
        _stage("tether.algorithms.pretrain:run_pretrain"),
        "Pre-train a causal LM by next-token prediction.",
    ),
    "sft": (
        SFTConfig,
        _stage("tether.algorithms.sft:run_sft"),
        "Supervised fine-tuning with loss on response tokens only.",
    ),
    "collect": (
        CollectConfig,
        _stage("tether.algorithms.collect:run_collect"),
        "Sample K responses per prompt, rank them with a judge, write pairs.",
    ),
    "reward-model": (RewardModelConfig, _reward_model, "Train a Bradley–Terry reward model on preferences."),
    "dpo": (
        DPOConfig,
        _stage("tether.algorithms.dpo:run_dpo"),
        "Offline preference optimisation: DPO and its family (IPO, SimPO, ORPO, …).",
    ),
    "kto": (
        KTOConfig,
        _stage("tether.algorithms.kto:run_kto"),
        "KTO on thumbs-up/down data (or rankings: best up, worst down).",
    ),
    "ppo": (
        PPOConfig,
        _stage("tether.algorithms.ppo:run_ppo"),
        "PPO with a value head: reward − β·KL, GAE, clipped ratio, K epochs.",
    ),
    "reinforce": (
        PGConfig,
        _policy_gradient("reinforce_baseline"),
        "REINFORCE with a moving-average baseline.",
    ),
    "rloo": (PGConfig, _policy_gradient("rloo"), "REINFORCE leave-one-out over G samples per prompt."),
    "grpo": (PGConfig, _policy_gradient("grpo"), "GRPO: group-normalised advantages, KL as a loss term."),
    "dpg": (DistributionMatchingConfig, _distribution_matching("dpg"), "DPG: fit π to p* ∝ π_ref·exp(r/β)."),
    "brain": (
        DistributionMatchingConfig,
        _distribution_matching("brain"),
        "BRAIn: DPG with a self-normalised baseline.",
    ),
    "nash-md": (
        NashMDConfig,
        _stage("tether.algorithms.nash_md:run_nash_md"),
        "Nash-MD: preference self-play regularised towards the reference.",
    ),
    "online-dpo": (
        OnlineDPOConfig,
        _stage("tether.algorithms.online_dpo:run_online_dpo"),
        "Online DPO: fresh pairs from the policy, labelled by a judge.",
    ),
    "iterative-dpo": (
        IterativeDPOConfig,
        _stage("tether.algorithms.online_dpo:run_iterative_dpo"),
        "Iterative DPO: rounds of sampling from the current policy, judge labels, and DPO.",
    ),
    "best-of-n": (
        BestOfNConfig,
        _stage("tether.algorithms.rejection_sampling:run_best_of_n"),
        "Best-of-n sampling with a judge; reports its analytic KL.",
    ),
    "rft": (
        RFTConfig,
        _stage("tether.algorithms.rejection_sampling:run_rft"),
        "Rejection-sampling fine-tuning: rounds of best-of-n selection and SFT.",
    ),
    "critique-revise": (
        CritiqueReviseConfig,
        _stage("tether.algorithms.constitutional:run_critique_revise"),
        "Constitutional AI: answer, self-critique by a principle, revise; the revisions become SFT data.",
    ),
    "judge-agreement": (
        JudgeAgreementConfig,
        _judge_agreement,
        "A judge's agreement with gold labels on held-out pairs, with and without order swapping.",
    ),
    "compare": (CompareConfig, _compare, "Win rate, gold reward and KL of a policy against its reference."),
    "score": (ScoreConfig, _score, "Score (prompt, completion) records with a reward model or judge."),
    "evaluate": (EvalConfig, _evaluate, "Evaluate a model on a gym task's held-out data."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tether", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (config_cls, _, summary) in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog="config fields (YAML keys or key=value overrides):\n" + describe(config_cls),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("--config", help="YAML file of field: value (overrides on the command line win).")
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="Set one config field.")
        if name == "pipeline":
            sub.add_argument("--from", dest="from_stage", help="Re-run this stage and every later one.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tether`` command (and of ``python -m tether``)."""
    configure_allocator()  # glibc: keep freed tensors in the heap (see engine/allocator.py)
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        argv = ["pipeline"]  # the embedded default: `tether` alone runs the main job
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    config_cls, run, _ = COMMANDS[args.command]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        config = load_config(config_cls, args.config, args.overrides)
        result = run(config, args)
    except TetherError as err:
        print(f"tether {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tether {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        _release_process_group()
    print(json.dumps(result, indent=2, default=str))
    return 0


def _release_process_group() -> None:
    """Under torchrun, tear the process group down before exit: gloo threads left to interpreter shutdown can
    abort a rank ("terminate called without an active exception") after the work is done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
