"""A Markdown report of the instruction-tuning stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _count(value: int) -> str:
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value / 1e3:.1f} k" if value >= 1e3 else str(value)


def ladder_lines(ladder: dict[str, Any] | None) -> list[str]:
    """The ladder of language models (``eval/ladder.py``): a table, then each opening's continuations."""
    if not ladder:
        return []
    models = ladder["models"]
    lines = [
        "## Language models: n-gram → RNN → Transformer",
        "",
        f"Perplexity per word on the same {ladder['heldout_documents']} held-out documents of the corpus (each "
        "document's end counts as a word; a neural LM pays for every token of it). Training time: of the "
        "stage that trained the model (the n-gram model: counting; after SFT: pre-training plus SFT).",
        "",
        "| model | perplexity per word ↓ | parameters | training (s) |",
        "|---|---|---|---|",
    ]
    for name, m in models.items():
        seconds = "—" if m.get("train_seconds") is None else f"{m['train_seconds']:.1f}"
        parameters = _count(m["parameters"]) + (" counts" if name == "ngram" else "")
        lines.append(f"| {m.get('label', name)} | {m['ppl_per_word']:.2f} | {parameters} | {seconds} |")
    lines += ["", "Sampled continuations of held-out openings (temperature 1):", ""]
    openings = [s["prompt"] for s in next(iter(models.values()))["samples"]]
    for index, opening in enumerate(openings):
        lines.append(f"- **{opening}** …")
        for name, m in models.items():
            completion = m["samples"][index]["completion"] if index < len(m["samples"]) else ""
            lines.append(f"  - {m.get('label', name)}: {completion or '(empty)'}")
    lines.append("")
    return lines


def mean_pm_std(cell: list[float] | None, form: str) -> str:
    """A [mean, std] cell as "mean ± std" in format ``form``; "–" for no value."""
    return "–" if cell is None else f"{format(cell[0], form)} ± {format(cell[1], form)}"


def seeds_lines(seeds: dict[str, Any] | None) -> list[str]:
    """Mean ± std of every policy column over the seeds, and each seed's reward-hacking check (β = 0)."""
    if not seeds:
        return []
    lines = []
    if len(seeds["seeds"]) > 1:
        lines += [
            f"## Policies over {len(seeds['seeds'])} seeds ({', '.join(map(str, seeds['seeds']))}): mean ± std",
            "",
            "| policy | gold reward ↑ | win rate vs SFT ↑ | proxy (RM) reward | KL to SFT reference | length |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {mean_pm_std(c.get('gold'), '.3f')} | {mean_pm_std(c.get('win_rate'), '.1%')} | {mean_pm_std(c.get('proxy'), '.3f')} "
            f"| {mean_pm_std(c.get('kl'), '.2f')} | {mean_pm_std(c.get('length'), '.1f')} |"
            for name, c in seeds["summary"].items()
        ]
        lines.append("")
    lines += [
        "## Reward hacking (PPO with β = 0)",
        "",
        "Proxy and gold reward over training (moving average of 5 logged steps), and the held-out gold of the "
        "final policies. Hacking holds when the proxy rises, the gold ends at least 0.1 below its own peak, and "
        "the final gold is below the tethered run's.",
        "",
        "| seed | proxy start → end | gold peak → end | final gold, β = 0 | final gold, tethered | holds |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {seed} | – | – | – | – | fewer than two logged steps |"
        if h is None
        else f"| {seed} | {h['proxy_start']:.3f} → {h['proxy_end']:.3f} | {h['gold_peak']:.3f} → {h['gold_end']:.3f} "
        f"| {h['final_gold']:.3f} | {h['tethered_final_gold']:.3f} | {'yes' if h['holds'] else 'no'} |"
        for seed, h in seeds["hacking"].items()
    ]
    lines.append("")
    return lines


def stage_time_lines(seconds: dict[str, float], efficiency: dict[str, dict[str, float]]) -> list[str]:
    """Each stage's wall time and, for a training stage, its tokens/s, model GFLOP/s and MFU against this
    machine's measured fp32 matrix-product peak (``engine/flops.py``)."""
    lines = [
        "## Stage times",
        "",
        "Tokens/s: training tokens (online stages: response tokens). MFU: the model's FLOP/s over the "
        "fp32 matrix-product peak measured on this machine at the run's thread count.",
        "",
        "| stage | seconds | tokens/s | model GFLOP/s | MFU |",
        "|---|---|---|---|---|",
    ]
    for stage, time_taken in seconds.items():
        e = efficiency.get(stage)
        rates = (
            f"{e['tokens_per_s']:.0f} | {e['model_tflops'] * 1e3:.1f} | {e['mfu']:.0%}" if e else "– | – | –"
        )
        lines.append(f"| {stage} | {time_taken:.1f} | {rates} |")
    return [*lines, ""]


def write_instruct_report(summary: dict[str, Any], out_dir: str | Path) -> Path:
    """``report.md``: the metrics table of each evaluated model, stage times, and sample answers."""
    lines = [
        f"# tether pipeline — task `{summary['task']}`",
        "",
        "| model | response NLL ↓ | follow rate ↑ | stop rate ↑ |",
    ]
    lines.append("|---|---|---|---|")
    for name, metrics in summary["results"].items():
        if "response_nll" in metrics:
            lines.append(
                f"| {name} | {metrics['response_nll']:.3f} | {metrics['follow_rate']:.1%} | {metrics['stop_rate']:.1%} |"
            )
    lines += [
        "",
        "Response NLL: mean negative log-likelihood per token of held-out reference responses.",
        "Follow rate: greedy answers to held-out prompts that stop on their own and do what was asked.",
        "",
    ]
    lines += ladder_lines(summary.get("ladder"))
    policies = summary.get("policies")
    if policies:
        lines += [
            "## Policies (one sample per held-out prompt, temperature 1)",
            "",
            "| policy | gold reward ↑ | win rate vs SFT ↑ | proxy (RM) reward | KL to SFT reference | length | distinct-2 |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {m['gold']:.3f} | {m.get('win_rate', float('nan')):.1%} | {m.get('proxy', float('nan')):.3f} "
            f"| {m['kl']:.2f} | {m['length']:.1f} | {m.get('distinct_2', float('nan')):.3f} |"
            for name, m in policies.items()
        ]
        lines.append("")
    lines += seeds_lines(summary.get("seeds"))
    reward = summary.get("reward_model")
    if reward:
        lines += [
            "## Reward model (held-out pairs labelled by the gold judge)",
            "",
            f"Accuracy {reward['accuracy']:.1%} on {reward['pairs']} pairs; Bradley–Terry NLL {reward['bt_nll']:.3f}; "
            f"expected calibration error {reward['ece']:.3f}. Rewards: chosen {reward['chosen_mean']:.2f} ± "
            f"{reward['chosen_std']:.2f}, rejected {reward['rejected_mean']:.2f} ± {reward['rejected_std']:.2f}.",
            "",
            "| predicted P(first ≻ second) | pairs | mean predicted | observed |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {row['bin']} | {row['pairs']} | {row['predicted']:.2f} | {row['observed']:.2f} |"
            for row in reward["calibration"]
        ]
        lines.append("")
    if summary.get("seconds"):
        lines += stage_time_lines(summary["seconds"], summary.get("efficiency") or {})
    lines += ["## Sample answers", ""]
    for name, metrics in {
        **summary["results"],
        **{f"{k} (sampled)": v for k, v in (policies or {}).items()},
    }.items():
        lines += [f"### {name}", ""]
        for sample in metrics.get("samples", []):
            lines += [f"- **{sample['prompt']}** → {sample['completion'] or '(empty)'}"]
        lines.append("")
    path = Path(out_dir) / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
