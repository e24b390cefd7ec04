"""Running benchmark contenders: each run in a fresh process, the contenders interleaved round by round
(so a slow spell of the machine hits them all alike), in reverse order every other round (so a machine
speeding up or slowing down over a round favours no one), the median of the repeats reported.

On a shared 2-core machine a run's time can swing by ±30 % from one minute to the next, for every
contender alike. The ratio within each round (the two runs compared are a few seconds apart), summarised
by its median and range (:func:`paired_speedup`), shows that spread instead of hiding it in two medians.
A script may also report a run's CPU time (``cpu_seconds``): it grows with the wall time when the
machine itself runs slower, and does not when the process waits for a core."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run_setup(script: str, argv: list[str]) -> dict:
    """Run ``script --setup *argv`` in its own process and return the JSON of its last line.

    The heavy preparation (building the model, writing the data, counting tokens) stays out of the
    measuring process: on Linux a child's ``ru_maxrss`` starts from its parent's resident size at the
    fork (the high-water mark survives the exec), so a measuring process that loaded torch and a
    tokenizer would put a floor under every contender's peak RSS."""
    done = subprocess.run(
        [sys.executable, script, "--setup", *argv], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"setup failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(script: str, contenders: list[str], argv: list[str], repeat: int) -> dict[str, dict]:
    """{contender: {seconds, peak_rss_mb, baseline_rss_mb, process_seconds (medians), runs: [seconds, …],
    process_runs: [process_seconds, …]}}.

    ``script --run NAME *argv`` must print one JSON line with seconds, peak_rss_mb, baseline_rss_mb;
    ``process_seconds`` is the wall time of the whole process (interpreter start, imports and exit
    included), as the parent sees it."""
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for round_index in range(repeat):
        for name in contenders if round_index % 2 == 0 else contenders[::-1]:
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, script, "--run", name, *argv], capture_output=True, text=True, check=False
            )
            process_seconds = time.perf_counter() - started
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            runs[name].append(
                {**json.loads(done.stdout.strip().splitlines()[-1]), "process_seconds": process_seconds}
            )
            print(f"round {round_index + 1}/{repeat}", name, runs[name][-1], flush=True)
    return {
        name: {
            **{key: statistics.median(r[key] for r in rows) for key in rows[0]},
            "runs": [round(r["seconds"], 2) for r in rows],
            "process_runs": [round(r["process_seconds"], 2) for r in rows],
        }
        for name, rows in runs.items()
    }


def paired_speedup(results: dict[str, dict], ours: str, theirs: str, key: str = "runs") -> str:
    """How many times faster ``ours`` ran than ``theirs`` round by round: "median× (min–max over N rounds)";
    ``key`` "process_runs" compares whole processes."""
    ratios = sorted(t / o for o, t in zip(results[ours][key], results[theirs][key]))
    return f"{statistics.median(ratios):.2f}× ({ratios[0]:.2f}–{ratios[-1]:.2f} over {len(ratios)} rounds)"


def results_table(results: dict[str, dict], tokens: int) -> list[str]:
    """The Markdown table of whole-process and training-call results, one row per contender (the form of
    ``sft_vs_trl.md`` and ``rm_vs_trl.md``)."""
    lines = [
        "| contender | process s | tokens/s (process) | training call s | tokens/s (call) | peak RSS (MB) "
        "| RSS growth after imports (MB) | runs, process (s) | runs, call (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['process_seconds']:.1f} | {tokens / r['process_seconds']:.0f} | {r['seconds']:.1f} "
            f"| {tokens / r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['baseline_rss_mb']:.0f} "
            f"| {', '.join(map(str, r['process_runs']))} | {', '.join(map(str, r['runs']))} |"
        )
    return lines


def comparison(results: dict[str, dict], mine: str, name: str) -> str:
    """One line: how ``mine`` compares with ``name`` (speed-ups, whole process and training call, medians and
    round by round; peak RSS and RSS growth ratios)."""
    ours, theirs = results[mine], results[name]
    growth = (ours["peak_rss_mb"] - ours["baseline_rss_mb"]) / max(
        1.0, theirs["peak_rss_mb"] - theirs["baseline_rss_mb"]
    )
    return (
        f"\n{mine} vs {name}: whole process {theirs['process_seconds'] / ours['process_seconds']:.2f}× "
        f"(round by round {paired_speedup(results, mine, name, 'process_runs')}), training call "
        f"{theirs['seconds'] / ours['seconds']:.2f}× (round by round {paired_speedup(results, mine, name)}), "
        f"{ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}× peak RSS, {growth:.2f}× RSS growth"
    )


def trl_training_args(args: Any, out: Path, checkpointing: bool) -> dict[str, Any]:
    """The TRL trainer-config fields both TRL contenders share: CPU, fp32, the run's batch, length, steps and
    learning rate at a constant schedule, no reports or saves, and gradient checkpointing on or off."""
    return {
        "output_dir": str(out),
        "use_cpu": True,
        "bf16": False,
        "per_device_train_batch_size": args.batch,
        "max_length": args.max_length,
        "max_steps": args.steps,
        "learning_rate": args.lr,
        "lr_scheduler_type": "constant",
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 10,
        "gradient_checkpointing": checkpointing,
        "dataloader_num_workers": 0,
    }
