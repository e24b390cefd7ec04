"""The frontier report (``tether frontier``): gold reward against KL per method over seeds, best-of-n's
analytic-KL curve as the reference, methods compared at matched KL, and the KL-budget check.

``frontier.md`` holds the tables; ``frontier.html`` the same tables with ``frontier.png`` embedded.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tether.report.html import _plt, _saved
from tether.report.markdown import mean_pm_std


def plot_frontier_curves(summary: dict[str, Any], records: list[dict[str, Any]], out: Path) -> str:
    """Every run's (KL, gold) point, each method's mean curve over its β values (error bars: std over
    seeds), and best-of-n at its analytic KL; vertical lines at the comparison KLs."""
    plt = _plt()
    figure, axis = plt.subplots(figsize=(7.5, 5))
    for index, method in enumerate([*summary["methods"], "best_of_n"]):
        colour = "black" if method == "best_of_n" else f"C{index}"
        own = [r for r in records if r.get("method", "best_of_n") == method and r["seed"] in summary["seeds"]]
        if own and method != "best_of_n":
            axis.scatter([r["kl"] for r in own], [r["gold"] for r in own], s=14, color=colour, alpha=0.35)
        cells = sorted(summary["points"][method].values(), key=lambda c: c["kl"][0])
        if cells:
            axis.errorbar(
                [c["kl"][0] for c in cells],
                [c["gold"][0] for c in cells],
                xerr=[c["kl"][1] for c in cells],
                yerr=[c["gold"][1] for c in cells],
                color=colour,
                marker="o" if method != "best_of_n" else "^",
                linestyle="--" if method == "best_of_n" else "-",
                capsize=3,
                label="best-of-n (RM picks; analytic KL)" if method == "best_of_n" else method,
            )
    for kl in summary["kl_points"]:
        axis.axvline(kl, color="grey", linewidth=0.6, linestyle=":")
    axis.axvline(summary["kl_budget"], color="tab:red", linewidth=0.8, linestyle=":", label="KL budget")
    axis.set_xlabel("KL(π ‖ π_SFT) per response (nats)")
    axis.set_ylabel("gold reward (held out)")
    axis.set_title(f"gold reward vs KL over {len(summary['seeds'])} seeds (points: single runs)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return _saved(figure, out / "frontier.png")


def frontier_tables(summary: dict[str, Any]) -> list[str]:
    """Markdown tables: each (method, β) point; gold at the comparison KLs; the KL-budget check."""
    lines = [
        f"Seeds: {', '.join(map(str, summary['seeds']))}. Mean ± std over seeds.",
        "",
        "## Every budget",
        "",
        "| method | setting | KL to SFT | gold reward | proxy (RM) reward |",
        "|---|---|---|---|---|",
    ]
    for method, cells in summary["points"].items():
        for setting, c in cells.items():
            lines.append(
                f"| {method} | {setting} | {mean_pm_std(c['kl'], '.2f')} | {mean_pm_std(c['gold'], '.3f')} | {mean_pm_std(c['proxy'], '.3f')} |"
            )
    kls = [f"{k:g}" for k in summary["kl_points"]]
    lines += [
        "",
        "## Gold reward at matched KL",
        "",
        "Interpolated on each seed's own curve, which starts at the SFT policy (KL 0), between the two measured "
        "points around that KL (no extrapolation; – where a seed's runs do not reach it; n = seeds that do).",
        "",
        "| method | " + " | ".join(f"KL = {k}" for k in kls) + " |",
        "|---|" + "---|" * len(kls),
    ]
    for method, cells in summary["matched_kl"].items():
        row = [
            f"{mean_pm_std(cells[k]['gold'], '.3f')} (n={cells[k]['seeds']})" if cells[k]["gold"] else "–"
            for k in kls
        ]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    budget = summary["kl_budget"]
    lines += [
        "",
        f"## Within a KL budget of {budget:g} nats",
        "",
        "Per seed: the best gold reward among the runs with KL ≤ the budget, and the share of the gap between "
        "the SFT policy's gold (best-of-1, same seed) and the maximum 1 that it closes.",
        "",
        "| method | " + " | ".join(f"seed {s}" for s in summary["seeds"]) + " |",
        "|---|" + "---|" * len(summary["seeds"]),
    ]
    for method, per_seed in summary["within_budget"].items():
        row = [
            "none within budget"
            if (c := per_seed.get(s, per_seed.get(str(s)))) is None
            else f"{c['gold']:.3f} at KL {c['kl']:.1f} (β {c['beta']:g}): {c['gap_closed']:.0%}"
            for s in summary["seeds"]
        ]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return lines


def write_frontier_report(summary: dict[str, Any], records: list[dict[str, Any]], out: Path) -> Path:
    """``frontier.md`` and ``frontier.html`` (image embedded) in ``out``; returns the Markdown path."""
    tables = frontier_tables(summary)
    markdown = out / "frontier.md"
    markdown.write_text(
        "\n".join(["# Gold reward against KL", "", "![frontier](frontier.png)", "", *tables, ""]),
        encoding="utf-8",
    )
    uri = plot_frontier_curves(summary, records, out)
    body = "".join(_markdown_table_html(tables))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>tether frontier</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}td:first-child{text-align:left}"
        f"img{{max-width:100%}}</style></head><body><h1>Gold reward against KL</h1><img src='{uri}' alt='frontier'>"
        f"{body}</body></html>"
    )
    (out / "frontier.html").write_text(page, encoding="utf-8")
    return markdown


def _markdown_table_html(lines: list[str]) -> list[str]:
    """The few Markdown forms ``frontier_tables`` writes (headings, paragraphs, pipe tables) as HTML."""
    parts, table = [], []
    for line in [*lines, ""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                table.append([html.escape(cell.strip()) for cell in line.strip("|").split("|")])
            continue
        if table:
            head, *rows = table
            parts.append(
                "<table><tr>"
                + "".join(f"<th>{c}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
                + "</table>"
            )
            table = []
        if line.startswith("## "):
            parts.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line:
            parts.append(f"<p>{html.escape(line)}</p>")
    return parts
