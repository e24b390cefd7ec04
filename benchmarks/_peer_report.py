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
        lines += matched_kl(rows, sft, method, out)
    path = out / "peer.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def matched_kl(
    rows: list[dict[str, Any]], sft: dict[int, dict[str, Any]], method: str, out: Path
) -> list[str]:
    """Gold at matched KL for the libraries run at two β or more: Gao et al.'s RL curve fitted to every
    seed's points (gain over the seed's SFT gold), and each seed's curve from its SFT point (KL 0)
    interpolated, the mean over the seeds whose curve reaches that KL; the points and fits drawn to
    ``frontier_METHOD.png``."""
    from tether.eval.aggregate import fit_rl_gold_curve, gold_at_kl, rl_gold_curve

    libraries = [lib for lib in LABELS if len({r["beta"] for r in rows if r["library"] == lib}) >= 2]
    if not libraries or not sft:
        return []
    sft_mean, _ = mean_std([r["gold"] for r in sft.values()])
    # KLs every library's runs bracket: below its first run a seed's curve is a straight line from the
    # SFT point, which the concave gold curve lies above.
    low = max(min(r["kl"] for r in rows if r["library"] == lib) for lib in libraries)
    reach = min(max(r["kl"] for r in rows if r["library"] == lib) for lib in libraries)
    grid = [k for k in range(1, 31) if low <= k <= reach] or [round((low + reach) / 2, 1)]
    fits = {}
    lines = [
        f"## {method.upper()} at matched KL",
        "",
        "Gold reward at each KL, two ways: Gao et al.'s RL form fitted to every run (gain over the seed's "
        "SFT gold = d(α − β ln d), d = √KL; plus the mean SFT gold), and each seed's measured curve "
        "(its SFT point at KL 0, then its runs by KL) interpolated, the mean over the seeds that reach the "
        "KL (their number in brackets when not all).",
        "",
        "| library | fit α, β (rmse) | " + " | ".join(f"KL {k}: fit / measured" for k in grid) + " |",
        "|---|---|" + "---|" * len(grid),
    ]
    for lib in libraries:
        mine = [r for r in rows if r["library"] == lib and r["seed"] in sft]
        gains = [(r["kl"], r["gold"] - sft[r["seed"]]["gold"]) for r in mine]
        alpha, beta = fits[lib] = fit_rl_gold_curve(gains)
        rmse = (sum((g - rl_gold_curve(alpha, beta, kl)) ** 2 for kl, g in gains) / len(gains)) ** 0.5
        curves = {
            s: [(0.0, sft[s]["gold"])] + [(r["kl"], r["gold"]) for r in mine if r["seed"] == s]
            for s in sorted({r["seed"] for r in mine})
        }
        cells = []
        for k in grid:
            at = [g for curve in curves.values() if (g := gold_at_kl(curve, k)) is not None]
            measured = (
                "–"
                if not at
                else f"{mean_std(at)[0]:.3f}" + ("" if len(at) == len(curves) else f" ({len(at)})")
            )
            cells.append(f"{sft_mean + rl_gold_curve(alpha, beta, k):.3f} / {measured}")
        lines.append(f"| {LABELS[lib]} | {alpha:.3f}, {beta:.3f} ({rmse:.3f}) | " + " | ".join(cells) + " |")
    lines += ["", f"![gold against KL](frontier_{method}.png)", ""]
    draw_frontier(rows, fits, sft_mean, libraries, out / f"frontier_{method}.png")
    return lines


def draw_frontier(
    rows: list[dict[str, Any]],
    fits: dict[str, tuple[float, float]],
    sft_mean: float,
    libraries: list[str],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tether.eval.aggregate import rl_gold_curve

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, lib in enumerate(libraries):
        color = f"C{i}"
        mine = [r for r in rows if r["library"] == lib]
        ax.scatter([r["kl"] for r in mine], [r["gold"] for r in mine], color=color, s=18, label=LABELS[lib])
        low, top = min(r["kl"] for r in mine), max(r["kl"] for r in mine)  # the fit where it was fitted
        xs = [low + (top - low) * j / 100 for j in range(101)]
        ax.plot(xs, [sft_mean + rl_gold_curve(*fits[lib], x) for x in xs], color=color, lw=1)
    ax.scatter([0.0], [sft_mean], color="black", marker="x", label="SFT model (mean over seeds)")
    ax.set_xlabel("KL(π ‖ π_SFT) per response (nats)")
    ax.set_ylabel("gold reward")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
