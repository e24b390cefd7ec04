"""The GPU check's runner: sections run in order under one time budget, each failure caught into its
row, and the rows as one Markdown table; the modules every section needs and the bf16 peaks MFU is
measured against."""

from __future__ import annotations

import importlib.util
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Import name → what needs it. The first group is needed by every section.
REQUIRED = ("torch", "transformers", "accelerate", "peft", "safetensors", "tokenizers", "yaml", "tqdm")
OPTIONAL = {
    "pytest": "the test suite",
    "xdist": "running the tests in parallel (pytest-xdist)",
    "matplotlib": "the pipeline's HTML report",
    "tensorboard": "the pipeline's training logs",
    "datasets": "the tests of `datasets` folders",
    "gguf": "the tests of GGUF models",
}
# Dense bf16 peak of the tensor cores (no sparsity) by a word of the device's name; the first match wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200", 989.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


MFU_NOTE = (
    "- MFU = 6·N·tokens/s ÷ peak: training FLOPs only; attention, GRPO's sampling and its reference "
    "forward are in the time but not in the FLOPs"
)


class Skip(Exception):
    """A section that does not apply on this machine; the message says why."""


class OutOfTime(Exception):
    """A section stopped at the time it was given; the message says where it was."""


@dataclass
class Section:
    """One row of the report. ``run(seconds)`` does the check within ``seconds`` and returns its result."""

    name: str
    run: Callable[[float], str]
    needs: tuple[str, ...] = ()
    min_seconds: float = 0.0
    max_seconds: float = math.inf


@dataclass
class Row:
    name: str
    status: str
    seconds: float
    result: str = ""
    notes: list[str] = field(default_factory=list)


class Failure(Exception):
    """A failed check with lines worth listing under the table."""

    def __init__(self, message: str, notes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.notes = list(notes)


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text[:200]


def run_sections(
    sections: Sequence[Section],
    budget_s: float,
    missing: Sequence[str] = (),
    clock: Callable[[], float] = time.perf_counter,
    after: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Run ``sections`` in order within ``budget_s`` seconds in all; a section is given what is left (at
    most its ``max_seconds``) and skipped when that is less than its ``min_seconds`` or when it needs a
    module in ``missing``. ``after(row)`` is called as each row is done."""
    started = clock()
    rows = []
    for section in sections:
        lacking = [name for name in section.needs if name in missing]
        left = budget_s - (clock() - started)
        if lacking:
            row = Row(section.name, f"skipped: needs {', '.join(lacking)}", 0.0)
        elif left < section.min_seconds:
            row = Row(section.name, "skipped: time budget", 0.0)
        else:
            begun, notes = clock(), []
            try:
                status, result = "ok", section.run(min(left, section.max_seconds))
            except Skip as err:
                status, result = f"skipped: {err}", ""
            except OutOfTime as err:
                status, result = "stopped: time budget", str(err)
            except Exception as err:  # a check's failure is its row's result, not the end of the run
                status, result = f"FAILED: {one_line(err)}", ""
                notes = getattr(err, "notes", [])
            row = Row(section.name, status, clock() - begun, result, notes)
        rows.append(row)
        if after is not None:
            after(row)
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_table(rows: Sequence[Row]) -> str:
    """The rows as one Markdown table, then the notes of each row (failed tests, …) as a list."""
    lines = ["| check | status | time (s) | result |", "| --- | --- | ---: | --- |"]
    lines += [f"| {_cell(r.name)} | {_cell(r.status)} | {r.seconds:.1f} | {_cell(r.result)} |" for r in rows]
    for row in rows:
        if row.notes:
            lines += ["", f"{row.name}:", ""] + [f"- {note}" for note in row.notes]
    return "\n".join(lines) + "\n"


def mfu(n_params: int, tokens_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation of training: 6·N FLOPs per token (forward 2·N, backward 4·N) over the peak."""
    return 6.0 * n_params * tokens_per_s / peak_flops


def peak_bf16_flops(device_name: str) -> float | None:
    """The dense bf16 peak (FLOP/s) of a known device name, else None."""
    for words, tflops in PEAK_BF16_TFLOPS:
        if re.search(rf"\b{re.escape(words)}\b", device_name, re.IGNORECASE):
            return tflops * 1e12
    return None


def missing_modules(names: Sequence[str]) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]
