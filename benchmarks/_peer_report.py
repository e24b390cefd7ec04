"""The results file and the report of ``trl_peer.py``: ``results.jsonl`` (one record per run) and
``peer.md``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

LABELS = {
    "sft": "SFT model",
    "tether": "tether",
    "trl": "TRL",
    "tether-trlobj": "tether (TRL's RLOO objective)",
    "tether-rows": "tether (rows shuffled into minibatches)",
    "tether-trlobj-rows": "tether (TRL's RLOO objective, rows shuffled into minibatches)",
}


def settings_key(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a result was measured at beyond (library, method, seed, β): a re-run with other ones
    does not count it as done."""
    return {"max_steps_arg": args.max_steps or None, "n_prompts": args.n_prompts}


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def key_of(record: dict[str, Any]) -> tuple:
    return (
        record["library"],
        record["method"],
        record["seed"],
        record.get("beta_arg"),
        record.get("max_steps_arg"),
        record.get("n_prompts"),
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    from tether.eval.aggregate import mean_std as tether_mean_std

    return tether_mean_std(values)


def fmt(values: list[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def win_rates(records: list[dict[str, Any]], sft: dict[int, dict[str, Any]]) -> None:
    from tether.eval.metrics import win_rate

    for r in records:
        if r["seed"] in sft:
            r["win_rate"] = win_rate(r["gold_scores"], sft[r["seed"]]["gold_scores"])


def write_report(args: argparse.Namespace, records: list[dict[str, Any]], out: Path) -> Path:
    """``peer.md``: a table per method and β (mean ± std over seeds, then every seed's row)."""
    here = settings_key(args)
    current = [
        r for r in records if all(r.get(k) == v for k, v in here.items()) and r["seed"] in args.seed_list
    ]
    sft = {r["seed"]: r for r in current if r["library"] == "sft"}
    win_rates(current, sft)
    lines = [
        f"# A peer on the same task: TRL vs tether from `{args.pipeline}`",
        "",
        f"Seeds {', '.join(map(str, args.seed_list))}; {args.n_prompts} held-out prompts, one sample each "
        "(tether's `evaluate_policy`): gold reward (the task's hidden judge), KL(π ‖ π_SFT) per response "
        "(nats), win rate against the SFT model's samples under the gold judge (ties ½), proxy reward "
        "(the pipeline's reward model). Train seconds: the training call (model loading included). "
        f"Iterations: {'the pipeline' + chr(39) + 's' if not args.max_steps else args.max_steps}. "
        "Mean ± sample std over seeds. Settings mapping: `benchmarks/trl_peer.py`.",
        "",
    ]
    if sft:
        s = list(sft.values())
        lines += [
            f"SFT model: gold {fmt([r['gold'] for r in s])}, proxy {fmt([r['proxy'] for r in s])}.",
            "",
        ]
    for method in args.method_list:
        rows = [r for r in current if r["method"] == method]
        for beta in sorted({r["beta"] for r in rows}):
            at = [r for r in rows if r["beta"] == beta]
            iterations = sorted({r["iterations"] for r in at})
            lines += [
                f"## {method.upper()}, β = {beta:g}, {'/'.join(map(str, iterations))} "
                f"{'optimiser steps' if method == 'dpo' else 'iterations'}",
                "",
                "| library | gold | KL | win rate | proxy | train seconds |",
                "|---|---|---|---|---|---|",
            ]
            libraries = [lib for lib in LABELS if lib != "sft" and any(r["library"] == lib for r in at)]
            for lib in libraries:
                mine = [r for r in at if r["library"] == lib]
                lines.append(
                    f"| {LABELS[lib]} | {fmt([r['gold'] for r in mine])} | {fmt([r['kl'] for r in mine], 2)} "
                    f"| {fmt([r['win_rate'] for r in mine if 'win_rate' in r], 2) if sft else '–'} "
                    f"| {fmt([r['proxy'] for r in mine])} | {fmt([r['train_seconds'] for r in mine], 1)} |"
                )
            lines += [
                "",
                "| library | seed | gold | KL | win rate | proxy | train seconds |",
                "|---|---|---|---|---|---|---|",
            ]
            for lib in libraries:
                for r in sorted((r for r in at if r["library"] == lib), key=lambda r: r["seed"]):
                    win = f"{r['win_rate']:.2f}" if "win_rate" in r else "–"
                    lines.append(
                        f"| {LABELS[lib]} | {r['seed']} | {r['gold']:.3f} | {r['kl']:.2f} | {win} "
                        f"| {r['proxy']:.3f} | {r['train_seconds']:.1f} |"
                    )
            lines.append("")
    path = out / "peer.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
