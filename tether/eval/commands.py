"""The evaluation commands — ``tether evaluate``, ``score``, ``judge-agreement`` and ``compare`` — each a
``run_*(config)`` that loads what its config names, measures, optionally writes the result to
``config.output``, and returns it.

Models, data, prompts and judges come from their specs (``tether.specs``); the measurements are the other
modules of this package. Nothing here imports training code (``tether.algorithms``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether import TetherError
from tether.config import CompareConfig, EvalConfig, JudgeAgreementConfig, ScoreConfig
from tether.data.preference import load_pairs, text_or_messages
from tether.data.readers import read_records, write_jsonl
from tether.eval.instruct import evaluate_instruct
from tether.eval.judge import judge_agreement
from tether.eval.metrics import win_rate
from tether.eval.policy import evaluate_policy
from tether.gym import get_task
from tether.models import load_causal_lm, load_tokenizer
from tether.specs import load_prompts, resolve_judge


def run_evaluate(config: EvalConfig) -> dict[str, float]:
    """Response NLL on a gym task's held-out answers and the follow rate of greedy answers."""
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
        write_jsonl(config.output, [metrics])
    return metrics


def run_score(config: ScoreConfig) -> dict[str, float]:
    """Score ``{"prompt", "completion"}`` records with a judge; with ``output``, write them back with their
    ``score``. Returns how many records and their mean score."""
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


def oriented_by_gold(gold: Any, prompts: list, chosen: list, rejected: list) -> tuple[list, list, list, int]:
    """The pairs relabelled by a gold judge: its preferred response becomes ``chosen``, and pairs it scores
    equal are dropped. Returns (prompts, chosen, rejected, number dropped)."""
    first, second = gold.score(prompts, chosen), gold.score(prompts, rejected)
    keep = [i for i, (a, b) in enumerate(zip(first, second)) if a != b]
    swapped = {i: first[i] < second[i] for i in keep}
    return (
        [prompts[i] for i in keep],
        [rejected[i] if swapped[i] else chosen[i] for i in keep],
        [chosen[i] if swapped[i] else rejected[i] for i in keep],
        len(prompts) - len(keep),
    )


def run_judge_agreement(config: JudgeAgreementConfig) -> dict[str, Any]:
    """A judge's agreement with the labels of held-out pairs (the pairs' own, or a gold judge's), with and
    without order swapping, and its position bias (``eval/judge.py``)."""
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
        prompts, chosen, rejected, dropped = oriented_by_gold(gold, prompts, chosen, rejected)
    judge = resolve_judge(config.judge, config.seed, config.trust_remote_code)
    report = {**judge_agreement(judge, prompts, chosen, rejected, config.seed), "gold_ties_dropped": dropped}
    if config.output:
        write_jsonl(config.output, [report])
    return report


def run_compare(config: CompareConfig) -> dict[str, Any]:
    """Win rate (under the judge), gold reward, KL and diversity of a policy against its reference, each
    sampling once per held-out prompt with the same seed; ``samples`` holds the policy's samples."""
    prompts = load_prompts(config.prompts, config.n_prompts, config.seed, split="eval")
    judge = resolve_judge(config.judge, config.seed, config.trust_remote_code)
    reference = load_causal_lm(config.reference, config.trust_remote_code)
    tokenizer = load_tokenizer(config.reference, config.trust_remote_code)
    policy = load_causal_lm(config.policy, config.trust_remote_code)
    runs = {
        name: evaluate_policy(
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
        for name, model in (("reference", reference), ("policy", policy))
    }
    result = {
        "win_rate": win_rate(runs["policy"]["gold_scores"], runs["reference"]["gold_scores"]),
        **{
            f"{name}/{key}": value
            for name, metrics in runs.items()
            for key, value in metrics.items()
            if key not in {"gold_scores", "samples"}
        },
        "samples": runs["policy"]["samples"],
    }
    if config.output:
        Path(config.output).parent.mkdir(parents=True, exist_ok=True)
        Path(config.output).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result
