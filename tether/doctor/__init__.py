"""The GPU check: one short run that exercises tether's accelerator paths and reports them in one table.

``python -m tether.doctor`` (or ``bash scripts/gpu_check.sh``) runs, each section timed and each failure
caught and recorded so that one does not lose the rest, under one time budget (sections that no longer
fit are reported as skipped):

- SFT, DPO and GRPO steps on a randomly initialised Llama-shaped model of about 0.5B parameters in bf16,
  through tether's own trainer, DPO loss, sampler and policy-gradient loss, with tokens/s and MFU;
- FSDP2 (``configs/accelerate/fsdp.yaml``) on ``tether sft`` in one process, and in two when there are two
  GPUs, the saved folder then loaded back by plain ``transformers``;
- the test suite with CUDA visible (slow tests excluded: the other rows cover them);
- ``tether pipeline`` end to end on the tiny default model, with its wall time.

Without a CUDA device it prints one line, writes a report saying so, and exits 0.

The pieces: ``runner.py`` (sections, budget, the table), ``steps.py`` (the SFT, DPO and GRPO steps),
``checks.py`` (FSDP2, the test suite and the pipeline in child processes); this module builds the
report and is the entry point.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tether.doctor.checks import (
    REPO,
    check_reload,
    child_env,
    error_line,
    fsdp_check,
    fsdp_worker,
    parse_pytest,
    pipeline_check,
    run_logged,
    save_tiny_model,
    tests_check,
)
from tether.doctor.runner import (
    MFU_NOTE,
    OPTIONAL,
    PEAK_BF16_TFLOPS,
    REQUIRED,
    Failure,
    OutOfTime,
    Row,
    Section,
    Skip,
    format_table,
    mfu,
    missing_modules,
    one_line,
    peak_bf16_flops,
    run_sections,
)
from tether.doctor.steps import LLAMA_0_5B, Shape, StepResult, build_llama, dpo_step, grpo_step, sft_step

__all__ = [
    "LLAMA_0_5B",
    "MFU_NOTE",
    "OPTIONAL",
    "PEAK_BF16_TFLOPS",
    "REPO",
    "REQUIRED",
    "Failure",
    "OutOfTime",
    "Row",
    "Section",
    "Shape",
    "Skip",
    "StepResult",
    "build_llama",
    "check_reload",
    "child_env",
    "dpo_step",
    "error_line",
    "format_table",
    "fsdp_check",
    "fsdp_worker",
    "grpo_step",
    "main",
    "mfu",
    "missing_modules",
    "one_line",
    "parse_pytest",
    "peak_bf16_flops",
    "pipeline_check",
    "run_logged",
    "run_sections",
    "save_tiny_model",
    "sft_step",
    "tests_check",
]


def environment(missing: Sequence[str]) -> tuple[list[str], float | None]:
    """Lines about the machine and the bf16 peak that MFU is measured against."""
    import accelerate
    import torch
    import transformers

    name = torch.cuda.get_device_name(0)
    peak = peak_bf16_flops(name)
    lines = [
        f"- device: {torch.cuda.device_count()} × {name}, "
        f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB",
        f"- torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
        f"accelerate {accelerate.__version__}",
    ]
    measured = None
    try:
        a, size = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16), 8192
        for repeat in range(13):  # 3 warm-up products, 10 timed
            if repeat == 3:
                torch.cuda.synchronize()
                started = time.perf_counter()
            a @ a
        torch.cuda.synchronize()
        measured = 10 * 2 * size**3 / (time.perf_counter() - started)
        lines.append(f"- bf16 {size}³ matmul measured: {measured / 1e12:.0f} TFLOP/s")
    except Exception as err:  # the rows below still run, and say more
        lines.append(f"- bf16 matmul failed: {one_line(err)}")
    if peak:
        lines.append(f"- MFU is against the device's dense bf16 peak, {peak / 1e12:.0f} TFLOP/s (table)")
    elif measured:
        lines.append("- device not in the peak table: MFU is against the measured matmul rate")
        peak = measured
    absent = [f"{m} ({OPTIONAL.get(m, 'every check')})" for m in missing]
    lines.append(f"- missing modules: {', '.join(absent) if absent else 'none'}")
    return lines, peak


def build_sections(work: Path, logs: Path, missing: Sequence[str], peak: float | None) -> list[Section]:
    def step(fn: Callable[[], StepResult]) -> Callable[[float], str]:
        return lambda seconds: fn().describe(peak)

    return [
        Section("SFT step, 0.5B Llama, bf16 autocast", step(sft_step), REQUIRED, 20, 120),
        Section("DPO step, 0.5B Llama, bf16 autocast", step(dpo_step), REQUIRED, 20, 120),
        Section("GRPO step, 0.5B Llama, bf16 weights", step(grpo_step), REQUIRED, 30, 150),
        Section("FSDP2, 1 process: tether sft", lambda s: fsdp_check(1, s, work, logs), REQUIRED, 40, 180),
        Section("FSDP2, 2 processes: tether sft", lambda s: fsdp_check(2, s, work, logs), REQUIRED, 40, 180),
        Section(
            "test suite with CUDA", lambda s: tests_check(s, missing, logs), (*REQUIRED, "pytest"), 60, 240
        ),
        Section(
            "tether pipeline (tiny model)",
            lambda s: pipeline_check(s, work, logs),
            (*REQUIRED, "matplotlib", "tensorboard"),
            60,
        ),
    ]


def default_report_path() -> str:
    return str(Path(os.environ["OUT"]) / "gpu_check.md") if os.environ.get("OUT") else "gpu_check.md"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tether.doctor``: exit 0 when nothing failed (or there is no GPU), else 1."""
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=default_report_path(), help="Report file (default: $OUT/gpu_check.md)."
    )
    parser.add_argument("--budget", type=float, default=420.0, help="Seconds for all checks together.")
    parser.add_argument("--only", type=_row_numbers, help="Comma-separated rows to run (1 = the first).")
    parser.add_argument("--fsdp-worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fsdp_worker is not None:
        return fsdp_worker(args.fsdp_worker)
    if args.budget <= 0:
        parser.error(f"--budget must be positive, not {args.budget:g}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    missing = missing_modules([*REQUIRED, *OPTIONAL])

    cuda = "torch" not in missing and _cuda_available()
    if not cuda:
        reason = "torch is not installed" if "torch" in missing else "no CUDA device found"
        print(f"gpu_check: {reason}; nothing to check (skipped)")
        out.write_text(f"# tether GPU check\n\nskipped: {reason}; nothing to check.\n", encoding="utf-8")
        return 0
    header, peak = environment(missing)
    print("\n".join(header), flush=True)
    with tempfile.TemporaryDirectory(prefix="tether-gpu-check-") as folder:
        sections = build_sections(Path(folder), out.parent, missing, peak)
        if args.only:
            sections = [s for i, s in enumerate(sections, start=1) if i in args.only]

        def after(row: Row) -> None:
            gc.collect()
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            print(f"gpu_check: {row.name}: {row.status} ({row.seconds:.0f} s) {row.result}", flush=True)

        rows = run_sections(sections, args.budget, missing, after=after)
    report = "# tether GPU check\n\n" + "\n".join([*header, MFU_NOTE]) + "\n\n" + format_table(rows)
    out.write_text(report, encoding="utf-8")
    print(f"\n{report}\ngpu_check: report written to {out}")
    return 1 if any(row.status.startswith("FAILED") for row in rows) else 0


def _row_numbers(text: str) -> set[int]:
    try:
        return {int(n) for n in text.split(",")}
    except ValueError:
        raise argparse.ArgumentTypeError(f"row numbers like 1,3, not {text!r}") from None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
