"""Does ``torch.compile`` pay on this CPU, and after how many steps? The break-even run length of a compiled
training step (forward, backward, AdamW) against eager PyTorch, cold (an empty compile cache) and warm (the
cache a previous run of the same shapes left, as every run after the first one would find it).

Each contender runs in its own process (``_runs.measure``: interleaved rounds, medians) for ``--steps``
optimiser steps of a causal-LM loss on a batch of ``--batch`` rows; the sequence length cycles over
``--lengths`` (padded batches change length from step to step in a real run, and each new length is a new
shape for the compiler). What is reported per contender: the first steps' time (the compiler's cost lands
there), the steady step time (the median after ``--warmup`` steps) and the whole run. The break-even run
length is the number of steps after which the compiled run's total time falls below eager's:
``(compiled first-steps time − eager's for the same steps) / (eager step − compiled step)``.

Usage::

    .venv/bin/tether pipeline      # makes runs/pipeline/sft (the embedded default's tiny model)
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 .venv/bin/python benchmarks/compile_break_even.py \\
        --model runs/pipeline/sft --out benchmarks/compile_break_even.md

The compile cache lives in ``--cache`` (``runs/compile-cache``): the ``compile_cold`` contender empties it
first, ``compile_warm`` fills it once in a setup process and then reuses it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import measure

CONTENDERS = ["eager", "compile_cold", "compile_warm"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/pipeline/sft")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lengths", default="64,72,80,96", help="sequence lengths, cycled step by step")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="steps before the steady-state median")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", default="runs/compile-cache")
    parser.add_argument("--out", default="benchmarks/compile_break_even.md")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--fill-cache", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def lengths_of(args: argparse.Namespace) -> list[int]:
    return [int(n) for n in args.lengths.split(",")]


def first_steps(args: argparse.Namespace) -> int:
    """The steps the compiler's cost lands in: the warm-up, and at least one step of every length."""
    return max(args.warmup, len(lengths_of(args)))


def train(args: argparse.Namespace, compiled: bool) -> dict:
    """``--steps`` optimiser steps; each step's wall time."""
    import torch

    from tether.models import load_causal_lm

    torch.manual_seed(0)
    model = load_causal_lm(args.model)
    model.train()
    vocab = model.config.vocab_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [torch.randint(0, vocab, (args.batch, n)) for n in lengths_of(args)]
    forward = torch.compile(model) if compiled else model
    times = []
    started = time.perf_counter()
    for step in range(args.steps):
        ids = batches[step % len(batches)]
        begun = time.perf_counter()
        loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - begun)
    seconds = time.perf_counter() - started
    if not torch.isfinite(loss):
        sys.exit("non-finite loss")
    return {
        "seconds": seconds,
        "step_times": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_rss_mb": 0.0,
    }


def run_one(args: argparse.Namespace) -> None:
    cache = Path(args.cache).resolve()
    if args.run == "compile_cold":
        cache = cache.with_name(cache.name + "-cold")
        shutil.rmtree(cache, ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    result = train(args, compiled=args.run != "eager")
    times = result.pop("step_times")
    first = first_steps(args)
    result["first_steps_s"] = sum(times[:first])
    result["step_s"] = statistics.median(times[first:])
    print(json.dumps(result))


def fill_cache(args: argparse.Namespace) -> None:
    """One compiled run into the warm cache (the run before the measured ones)."""
    shutil.rmtree(Path(args.cache), ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(args.cache).resolve())
    train(args, compiled=True)


def report(args: argparse.Namespace, results: dict[str, dict]) -> str:
    import torch

    eager = results["eager"]
    first = first_steps(args)
    lines = [
        "# torch.compile against eager: the break-even run length",
        "",
        f"Model `{args.model}`, batch {args.batch}, sequence lengths {args.lengths} (cycled), {args.steps} "
        f"optimiser steps (forward, backward, AdamW); torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; medians of {args.repeat} interleaved runs, each in its own process.",
        "",
        f"| contender | first {first} steps (s) | steady step (ms) | whole run (s) | speed-up per step "
        "| break-even (steps) | runs (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        gain = eager["step_s"] - row["step_s"]
        extra = row["first_steps_s"] - first * eager["step_s"]
        if name == "eager":
            even = "–"
        elif gain <= 0:
            even = "never (not faster per step)"
        else:
            even = f"{first + max(0.0, extra) / gain:.0f}"
        lines.append(
            f"| {name} | {row['first_steps_s']:.2f} | {1000 * row['step_s']:.1f} | {row['seconds']:.2f} | "
            f"{eager['step_s'] / row['step_s']:.2f}× | {even} | {row['runs']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.run:
        run_one(args)
        return
    if args.fill_cache:
        fill_cache(args)
        return
    import subprocess

    argv = sys.argv[1:]
    subprocess.run([sys.executable, __file__, *argv, "--fill-cache"], check=True)
    results = measure(__file__, CONTENDERS, argv, args.repeat)
    text = report(args, results)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
