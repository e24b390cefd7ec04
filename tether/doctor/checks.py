"""The GPU check's checks that run in child processes: FSDP2 on ``tether sft`` (its saved folder loaded
back by plain transformers), the test suite with CUDA and ``tether pipeline``; each child in its own
process group, killed whole at its time limit, its output kept in a log."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tether.doctor.runner import Failure, OutOfTime, Skip

REPO = Path(__file__).resolve().parents[2]


def run_logged(
    command: Sequence[str], timeout: float, log: Path, env: dict | None = None, check: bool = True
) -> str:
    """Run ``command`` (its own process group, killed whole at ``timeout``), keep the end of its output in
    ``log``, and return the output. Raises OutOfTime at the timeout and, with ``check``, RuntimeError on a
    non-zero exit."""
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        log.write_text(output[-1_000_000:], encoding="utf-8")
        raise OutOfTime(f"not done after {timeout:.0f} s") from None
    log.write_text(output[-1_000_000:], encoding="utf-8")
    if check and process.returncode != 0:
        raise RuntimeError(f"exit status {process.returncode}: {error_line(output)} (log: {log.name})")
    return output


def error_line(output: str) -> str:
    """The last line of ``output`` that names an error (an exception, ``error:``), else its last line."""
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b", line) or "error:" in line:
            return line[:200]
    return lines[-1][:200] if lines else "(no output)"


def child_env() -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH (so children import this tether)."""
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "TOKENIZERS_PARALLELISM": "false"}


def parse_pytest(output: str, missing: Sequence[str] = ()) -> tuple[dict[str, int], list[str], list[str]]:
    """(counts of the closing line, failures for want of a module in ``missing``, other failures) of a
    pytest run with ``-rfE``; each failure is ``test id - reason``."""
    counts: dict[str, int] = {}
    for line in output.splitlines():
        found = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)\b", line)
        if found and re.search(r"\bin [\d.]+s\b", line):
            counts = {word.rstrip("s") if word == "errors" else word: int(n) for n, word in found}
    wanting, failed = [], []
    for line in output.splitlines():
        if not line.startswith(("FAILED ", "ERROR ")):
            continue
        entry = line.split(" ", 1)[1]
        module = re.search(r"No module named '([\w.]+)'", entry)
        (wanting if module and module.group(1).split(".")[0] in missing else failed).append(entry)
    return counts, wanting, failed


def save_tiny_model(folder: Path) -> None:
    """The pipeline's tiny model (a BPE tokenizer trained on the gym corpus) saved as a HF folder."""
    from tether.gym import get_task
    from tether.models import build_tiny_model, save_model, train_tokenizer

    task = get_task("reviews")
    tokenizer = train_tokenizer(task.pretrain_texts()[:500], vocab_size=512)
    save_model(build_tiny_model(tokenizer), tokenizer, folder)


def check_reload(start: Path, saved: Path) -> str:
    """Load ``saved`` with plain ``AutoModelForCausalLM.from_pretrained``: no missing, unexpected or
    mismatched weights, all finite, and moved from those in ``start``."""
    import torch
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(saved, output_loading_info=True)
    problems = {key: sorted(map(str, value))[:3] for key, value in info.items() if value}
    if problems:
        raise RuntimeError(f"{saved.name} loads with {problems}")
    before, after = AutoModelForCausalLM.from_pretrained(start).state_dict(), model.state_dict()
    if before.keys() != after.keys():
        raise RuntimeError(f"{saved.name}: weight names differ from the starting model's")
    if not all(torch.isfinite(value).all() for value in after.values()):
        raise RuntimeError(f"{saved.name}: non-finite weights")
    moved = max(float((after[k].float() - before[k].float()).abs().max()) for k in after)
    if moved == 0:
        raise RuntimeError(f"{saved.name}: the saved weights equal the starting ones")
    params = sum(p.numel() for p in model.parameters())
    return f"reloads in transformers ({params / 1e6:.1f}M params, no missing keys, max |Δw| {moved:.1e})"


def fsdp_worker(overrides: Sequence[str]) -> int:
    """Run ``tether sft`` with ``overrides`` (under ``accelerate launch``), then say how it was sharded."""
    from accelerate.state import AcceleratorState

    from tether.cli import main

    status = main(["sft", *overrides])
    state = AcceleratorState()
    if state.is_main_process:
        kind = getattr(state.distributed_type, "value", state.distributed_type)
        print(f"gpu_check fsdp: distributed_type={kind} fsdp2={getattr(state, 'is_fsdp2', None)}")
    return status


def fsdp_check(processes: int, seconds: float, work: Path, logs: Path) -> str:
    """``tether sft`` under ``configs/accelerate/fsdp.yaml`` with ``processes`` GPUs, saved and reloaded."""
    import torch

    if torch.cuda.device_count() < processes:
        raise Skip(f"needs {processes} GPUs, {torch.cuda.device_count()} here")
    config_file = REPO / "configs" / "accelerate" / "fsdp.yaml"
    if not config_file.is_file():
        raise Skip(f"{config_file} not found")
    start, out = work / "fsdp_start", work / f"fsdp_{processes}"
    if not start.is_dir():
        save_tiny_model(start)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    launch += ["--num_processes", str(processes), "--main_process_port", str(port)]
    overrides = [f"model={start}", f"output_dir={out}", "data=gym:reviews", "max_steps=4", "batch_size=4"]
    overrides += ["mixed_precision=bf16", "progress=false", "tensorboard=false", "learning_rate=1e-3"]
    output = run_logged(
        [*launch, "-m", "tether.doctor", "--fsdp-worker", *overrides],
        seconds,
        logs / f"gpu_check_fsdp{processes}.log",
        child_env(),
    )
    if "distributed_type=FSDP fsdp2=True" not in output:
        found = re.search(r"gpu_check fsdp: (.*)", output)
        raise RuntimeError(f"not sharded with FSDP2: {found.group(1) if found else 'no report from the run'}")
    return f"{processes} process(es), bf16, 4 steps; {check_reload(start, out)}"


def tests_check(seconds: float, missing: Sequence[str], logs: Path, paths: Sequence[str] = ("tests",)) -> str:
    """The fast tests in ``paths`` with CUDA visible (in parallel when pytest-xdist is there)."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-rfE", "-p", "no:cacheprovider"]
    command += ["--continue-on-collection-errors", "--tb=line"]
    if "xdist" not in missing:
        command += ["-n", "8"]
    output = run_logged([*command, *paths], seconds, logs / "gpu_check_tests.log", child_env(), check=False)
    counts, wanting, failed = parse_pytest(output, missing)
    if not counts:
        raise RuntimeError(f"pytest gave no closing line: {error_line(output)}")
    text = ", ".join(f"{n} {word}" for word, n in counts.items() if word != "deselected")
    text += f"; {counts.get('deselected', 0)} slow tests not run (the FSDP and pipeline rows cover them)"
    if wanting:
        modules = sorted({re.search(r"No module named '(\w+)", w).group(1) for w in wanting})
        text += f"; of the failures, {len(wanting)} for want of {', '.join(modules)} (not run here)"
    if failed:
        raise Failure(f"{len(failed)} tests failed ({text})", failed)
    return text


def pipeline_check(seconds: float, work: Path, logs: Path) -> str:
    """``tether pipeline`` on the embedded default, on the GPU."""
    log = logs / "gpu_check_pipeline.log"
    command = [sys.executable, "-m", "tether.cli", "pipeline", f"output_dir={work / 'pipeline'}"]
    started = time.perf_counter()
    try:
        run_logged(command, seconds, log, child_env())
    except (OutOfTime, RuntimeError) as err:
        stages = re.findall(r"pipeline: (\w+) →", log.read_text(encoding="utf-8"))
        where = f" in stage {stages[-1]}" if stages else ""
        raise type(err)(f"{err}{where}") from None
    report = work / "pipeline" / "report.md"
    return f"wall {time.perf_counter() - started:.0f} s, all stages done" + (
        ", report.md written" if report.is_file() else ""
    )
