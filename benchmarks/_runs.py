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


def measure(script: str, contenders: list[str], argv: list[str], repeat: int) -> dict[str, dict]:
    """{contender: {seconds, peak_rss_mb, baseline_rss_mb (medians), runs: [seconds, …]}}.

    ``script --run NAME *argv`` must print one JSON line with seconds, peak_rss_mb, baseline_rss_mb."""
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for round_index in range(repeat):
        for name in contenders if round_index % 2 == 0 else contenders[::-1]:
            done = subprocess.run(
                [sys.executable, script, "--run", name, *argv], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_index + 1}/{repeat}", name, runs[name][-1], flush=True)
    return {
        name: {
            **{key: statistics.median(r[key] for r in rows) for key in rows[0]},
            "runs": [round(r["seconds"], 2) for r in rows],
        }
        for name, rows in runs.items()
    }


def paired_speedup(results: dict[str, dict], ours: str, theirs: str) -> str:
    """How many times faster ``ours`` ran than ``theirs`` round by round: "median× (min–max over N rounds)"."""
    ratios = sorted(t / o for o, t in zip(results[ours]["runs"], results[theirs]["runs"]))
    return f"{statistics.median(ratios):.2f}× ({ratios[0]:.2f}–{ratios[-1]:.2f} over {len(ratios)} rounds)"
