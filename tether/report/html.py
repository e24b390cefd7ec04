"""The HTML report: plots (matplotlib, embedded as PNG) and tables of a pipeline run.

- training curves of every stage (loss, or proxy reward / gold reward / KL for online stages);
- the reward–KL frontier: gold and proxy reward of each policy against its KL to the reference;
- reward hacking: proxy and gold reward over training for a β = 0 run next to a β > 0 run;
- the methods table, the ladder of language models (n-gram → RNN → Transformer) and sample completions.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from tether.engine.logging import read_metrics
from tether.eval.aggregate import mean_std


def _figure_to_data_uri(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _saved(figure: Any, path: Path) -> str:
    """Write ``figure`` to ``path`` (PNG) and close it; return it as an embeddable data URI."""
    figure.savefig(path, dpi=110, bbox_inches="tight")
    uri = _figure_to_data_uri(figure)
    _plt().close(figure)
    return uri


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_frontier(policies: dict[str, dict], out: Path) -> str:
    """Gold and proxy reward against KL to the reference, one point per policy."""
    plt = _plt()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, title in (
        (axes[0], "gold", "gold reward"),
        (axes[1], "proxy", "proxy (reward-model) reward"),
    ):
        for name, metrics in policies.items():
            if key in metrics:
                axis.scatter(metrics["kl"], metrics[key], s=50)
                axis.annotate(name, (metrics["kl"], metrics[key]), textcoords="offset points", xytext=(5, 5))
        axis.set_xlabel("KL(π ‖ π_ref) per response (nats)")
        axis.set_ylabel(title)
        axis.set_title(f"{title} vs KL")
        axis.grid(alpha=0.3)
    return _saved(figure, out / "frontier.png")


def plot_seeds(runs: dict[Any, dict[str, dict]], out: Path) -> str:
    """Gold reward against KL: every seed's point of every policy, and each policy's mean ± std."""
    plt = _plt()
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    names = list(next(iter(runs.values())))
    for index, name in enumerate(names):
        points = [(r[name]["kl"], r[name]["gold"]) for r in runs.values() if name in r]
        colour = f"C{index}"
        axis.scatter(*zip(*points), s=22, color=colour, alpha=0.6)
        (mean_kl, std_kl), (mean_gold, std_gold) = (mean_std(values) for values in zip(*points))
        axis.errorbar(
            mean_kl, mean_gold, xerr=std_kl, yerr=std_gold, color=colour, marker="s", capsize=3, label=name
        )
    axis.set_xlabel("KL(π ‖ π_ref) per response (nats)")
    axis.set_ylabel("gold reward")
    axis.set_title(f"every seed ({len(runs)}): points; mean ± std: squares")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return _saved(figure, out / "seeds.png")


def plot_curves(stage_dirs: dict[str, Path], out: Path) -> str:
    """One panel per stage: the loss of offline stages; proxy, gold and KL of online ones."""
    plt = _plt()
    stages = {
        name: read_metrics(d / "metrics.jsonl")
        for name, d in stage_dirs.items()
        if (d / "metrics.jsonl").exists()
    }
    if not stages:
        return ""
    columns = min(4, len(stages))
    rows_of_panels = -(-len(stages) // columns)
    figure, axes = plt.subplots(
        rows_of_panels, columns, figsize=(4 * columns, 3.2 * rows_of_panels), squeeze=False
    )
    for axis in axes.flat[len(stages) :]:
        axis.set_visible(False)
    for axis, (name, rows) in zip(axes.flat, stages.items()):
        online = any("reward/score" in r for r in rows)
        keys = ("reward/score", "reward/gold", "kl/ref") if online else ("loss", "eval/loss")
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                axis.plot(*zip(*points), marker="." if key == "eval/loss" else None, label=key)
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return _saved(figure, out / "curves.png")


def plot_hacking(runs: dict[str, Path], out: Path) -> str:
    """Proxy vs gold reward over training for runs that differ in β (the KL tether)."""
    plt = _plt()
    columns = min(2, len(runs))
    rows_of_panels = -(-len(runs) // columns)
    figure, axes = plt.subplots(
        rows_of_panels, columns, figsize=(6 * columns, 3.8 * rows_of_panels), squeeze=False
    )
    for axis, (label, folder) in zip(axes.flat, runs.items()):
        rows = read_metrics(folder / "metrics.jsonl")
        steps = [r["step"] for r in rows]
        proxy = axis.plot(
            steps, [r["reward/score"] for r in rows], color="tab:blue", label="proxy (reward model)"
        )
        twin = axis.twinx()
        gold = twin.plot(steps, [r["reward/gold"] for r in rows], color="tab:red", label="gold")
        axis.set_title(f"{label}: final KL {rows[-1]['kl/ref']:.1f}")
        axis.set_xlabel("step")
        axis.set_ylabel("proxy reward", color="tab:blue")
        twin.set_ylabel("gold reward", color="tab:red")
        axis.legend(proxy + gold, [line.get_label() for line in proxy + gold], fontsize=8, loc="upper left")
        axis.grid(alpha=0.3)
    figure.tight_layout(w_pad=3)
    return _saved(figure, out / "hacking.png")


def ladder_html(ladder: dict[str, Any] | None) -> list[str]:
    """The ladder of language models: perplexity, size and training time, then sampled continuations."""
    if not ladder:
        return []
    models = ladder["models"]
    rows = "".join(
        f"<tr><td>{html.escape(m.get('label', name))}</td><td>{m['ppl_per_word']:.2f}</td>"
        f"<td>{m['parameters']:,}{' counts' if name == 'ngram' else ''}</td>"
        f"<td>{'—' if m.get('train_seconds') is None else format(m['train_seconds'], '.1f')}</td></tr>"
        for name, m in models.items()
    )
    openings = [s["prompt"] for s in next(iter(models.values()))["samples"]]
    samples = "".join(
        f"<li><b>{html.escape(opening)}</b> …<ul>"
        + "".join(
            f"<li>{html.escape(m.get('label', name))}: "
            f"{html.escape(m['samples'][i]['completion'] if i < len(m['samples']) else '') or '(empty)'}</li>"
            for name, m in models.items()
        )
        + "</ul></li>"
        for i, opening in enumerate(openings)
    )
    return [
        "<h2>Language models: n-gram → RNN → Transformer</h2>"
        f"<p>Perplexity per word on the same {ladder['heldout_documents']} held-out documents of the corpus "
        "(each document's end counts as a word; a neural LM pays for every token of it). Training time: of "
        "the stage that trained the model (the n-gram model: counting; after SFT: pre-training plus SFT).</p>"
        "<table><tr><th>model</th><th>perplexity per word ↓</th><th>parameters</th><th>training (s)</th></tr>"
        f"{rows}</table><p>Sampled continuations of held-out openings (temperature 1):</p><ul>{samples}</ul>"
    ]


def write_html_report(
    summary: dict[str, Any],
    out_dir: str | Path,
    stage_dirs: dict[str, Path],
    hacking_runs: dict[str, Path] | None = None,
) -> Path:
    """``report.html`` (self-contained: images embedded) plus the PNGs beside it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>tether pipeline — task <code>{html.escape(summary['task'])}</code></h1>"]
    policies = summary.get("policies") or {}
    if policies:
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{m['gold']:.3f}</td><td>{m.get('win_rate', float('nan')):.1%}</td>"
            f"<td>{m.get('proxy', float('nan')):.3f}</td><td>{m['kl']:.2f}</td><td>{m['length']:.1f}</td>"
            f"<td>{m.get('distinct_2', float('nan')):.3f}</td></tr>"
            for name, m in policies.items()
        )
        parts.append(
            "<h2>Methods</h2><p>One sample per held-out prompt at temperature 1; KL is the sampled estimate of "
            "KL(π ‖ π_SFT) per response; the win rate compares each policy's sample with the SFT policy's under "
            "the gold judge (ties ½).</p><table><tr><th>policy</th><th>gold reward ↑</th><th>win rate vs SFT</th>"
            f"<th>proxy reward</th><th>KL to reference</th><th>length</th><th>distinct-2</th></tr>{rows}</table>"
        )
        parts.append(f'<h2>Reward–KL frontier</h2><img src="{plot_frontier(policies, out)}" alt="frontier">')
    seeds = summary.get("seeds") or {}
    if len(seeds.get("seeds", [])) > 1:
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td>"
            + "".join(
                f"<td>{c[column][0]:{form}} ± {c[column][1]:{form}}</td>" if column in c else "<td>–</td>"
                for column, form in (("gold", ".3f"), ("win_rate", ".1%"), ("proxy", ".3f"), ("kl", ".2f"))
            )
            + "</tr>"
            for name, c in seeds["summary"].items()
        )
        parts.append(
            f"<h2>Over {len(seeds['seeds'])} seeds</h2><p>The policy-optimisation stages and their evaluation "
            "repeated for each seed from the same SFT model and reward model: mean ± standard deviation.</p>"
            "<table><tr><th>policy</th><th>gold reward ↑</th><th>win rate vs SFT</th><th>proxy reward</th>"
            f'<th>KL to reference</th></tr>{rows}</table><img src="{plot_seeds(seeds["runs"], out)}" alt="seeds">'
        )
    if hacking_runs:
        parts.append(
            "<h2>Reward hacking</h2><p>The same PPO run with and without the KL tether. Without it (β = 0) the "
            "policy climbs the learned reward while the gold reward lags or falls: it exploits what the reward "
            f'model got wrong.</p><img src="{plot_hacking(hacking_runs, out)}" alt="hacking">'
        )
    parts += ladder_html(summary.get("ladder"))
    curves = plot_curves(stage_dirs, out)
    if curves:
        parts.append(f'<h2>Training curves</h2><img src="{curves}" alt="curves">')
    reward = summary.get("reward_model")
    if reward:
        parts.append(
            f"<h2>Reward model</h2><p>Held-out accuracy {reward['accuracy']:.1%} on {reward['pairs']} pairs, "
            f"Bradley–Terry NLL {reward['bt_nll']:.3f}, calibration error {reward['ece']:.3f}.</p>"
        )
    samples = "".join(
        f"<h3>{html.escape(name)}</h3><ul>"
        + "".join(
            f"<li><b>{html.escape(str(s['prompt']))}</b> → {html.escape(s['completion'] or '(empty)')}</li>"
            for s in metrics.get("samples", [])
        )
        + "</ul>"
        for name, metrics in {**summary.get("results", {}), **policies}.items()
        if metrics.get("samples")
    )
    parts.append(f"<h2>Sample completions</h2>{samples}")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
        "td:first-child{text-align:left}img{max-width:100%}"
    )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>tether report</title><style>{style}</style></head>"
    page += f"<body>{''.join(parts)}</body></html>"
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
