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
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
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


@dataclass(frozen=True)
class Shape:
    """A Llama decoder's size."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int


LLAMA_0_5B = Shape(vocab=32000, hidden=1024, layers=24, heads=16, kv_heads=4, intermediate=5632)


# ------------------------------------------------------------------------------------------- the runner


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


# ------------------------------------------------------------------------------- steps on a 0.5B model


@dataclass
class StepResult:
    params: int
    tokens_per_step: int
    seconds_per_step: float
    loss: float
    peak_memory_gb: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.seconds_per_step

    def describe(self, peak_flops: float | None) -> str:
        text = (
            f"{self.params / 1e6:.1f}M params, {self.tokens_per_step} tokens/step, "
            f"{self.tokens_per_s:,.0f} tokens/s"
        )
        if peak_flops:
            text += f", MFU {mfu(self.params, self.tokens_per_s, peak_flops):.1%}"
        if self.peak_memory_gb:
            text += f", {self.peak_memory_gb:.1f} GB peak memory"
        return text + f", loss {self.loss:.3f}"


def build_llama(shape: Shape, device: str, dtype: Any, eos_ids: Sequence[int] = (0,), pad_id: int = 1) -> Any:
    """A randomly initialised Llama causal LM of ``shape``, built on ``device`` (tied embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=list(eos_ids),
        pad_token_id=pad_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = list(eos_ids)
    model.generation_config.pad_token_id = pad_id
    return model


def _timed(
    step: Callable[[], tuple[int, float]], device: str, warmup: int, steps: int
) -> tuple[int, float, float]:
    """(tokens of the last step, mean seconds per timed step, last loss)."""
    import torch

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        tokens, loss = step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return tokens, (time.perf_counter() - started) / steps, loss


def _memory_gb(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else 0.0


def _trainer_steps(
    model: Any, data: list, collate: Callable, loss_fn: Callable, count_fn: Callable, batch: int, **run: Any
) -> StepResult:
    """Optimiser steps of tether's Trainer (its device placement, autocast and fused AdamW) on ``data``."""
    from tether.config import TrainConfig
    from tether.engine import Trainer
    from tether.models import TokenLogProbs

    device, warmup, steps = run["device"], run["warmup"], run["steps"]
    with tempfile.TemporaryDirectory(prefix="tether-gpu-check-") as folder:
        config = TrainConfig(
            output_dir=folder,
            batch_size=batch,
            max_steps=warmup + steps,
            learning_rate=1e-4,
            warmup_ratio=0.0,
            mixed_precision=run["mixed_precision"],
            progress=False,
            tensorboard=False,
        )
        trainer = Trainer(config, TokenLogProbs(model), data, collate, loss_fn, count_fn)

        def step() -> tuple[int, float]:
            row = trainer.train_step()
            trainer.step += 1
            return int(row["items"]), row["loss"]

        _, seconds, loss = _timed(step, device, warmup, steps)
    params = sum(p.numel() for p in model.parameters())
    return StepResult(params, 0, seconds, loss, _memory_gb(device))


def sft_step(
    shape: Shape = LLAMA_0_5B,
    device: str = "cuda",
    mixed_precision: str = "bf16",
    batch: int = 8,
    seq_len: int = 1024,
    warmup: int = 2,
    steps: int = 4,
) -> StepResult:
    """SFT steps (next-token loss on every token) on random tokens, through tether's Trainer."""
    import torch

    from tether.algorithms.common import count_loss_tokens, lm_batch_loss
    from tether.data.tokenize import TokenizedExample, pad_collate

    model = build_llama(shape, device, torch.float32)
    ids = torch.randint(2, shape.vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0)).tolist()
    data = [TokenizedExample(row, row) for row in ids]
    result = _trainer_steps(
        model,
        data,
        lambda examples: pad_collate(examples, 1),
        lm_batch_loss,
        count_loss_tokens,
        batch,
        device=device,
        mixed_precision=mixed_precision,
        warmup=warmup,
        steps=steps,
    )
    result.tokens_per_step = batch * seq_len
    return result


def dpo_step(
    shape: Shape = LLAMA_0_5B,
    device: str = "cuda",
    mixed_precision: str = "bf16",
    pairs: int = 8,
    prompt_len: int = 256,
    response_len: int = 256,
    warmup: int = 2,
    steps: int = 4,
) -> StepResult:
    """DPO steps on random pairs through tether's padding-free pair batches (each prompt computed once),
    its DPO loss and Trainer. Reference log-probs, computed once per run in tether, are set to 0."""
    import torch

    from tether.algorithms.dpo import collate_pairs
    from tether.algorithms.offline import sequence_logps
    from tether.data.tokenize import TokenizedExample, TokenizedPair
    from tether.losses.preference import combined_preference_loss
    from tether.models.forward import shares_prefixes
    from tether.ops.logprobs import IGNORE_INDEX

    model = build_llama(shape, device, torch.float32)
    generator = torch.Generator().manual_seed(0)
    data = []
    for _ in range(pairs):
        prompt = torch.randint(2, shape.vocab, (prompt_len,), generator=generator).tolist()
        sides = [torch.randint(2, shape.vocab, (response_len,), generator=generator).tolist() for _ in "cr"]
        chosen, rejected = (
            TokenizedExample(prompt + side, [IGNORE_INDEX] * prompt_len + side) for side in sides
        )
        data.append(TokenizedPair(chosen, rejected, 1.0))
    pack_length = 2 * (prompt_len + 2 * response_len + 2)  # two pairs per row

    def loss_fn(module: Any, batch: dict) -> tuple[Any, dict]:
        n = batch["weight"].shape[0]
        logps, _ = sequence_logps(module, batch, 2 * n)
        losses, metrics = combined_preference_loss(
            {"dpo": 1.0},
            policy_chosen_logps=logps[:n],
            policy_rejected_logps=logps[n:],
            ref_chosen_logps=batch["ref_chosen"],
            ref_rejected_logps=batch["ref_rejected"],
            beta=0.1,
        )
        return (losses * batch["weight"]).sum(), metrics

    result = _trainer_steps(
        model,
        data,
        lambda batch: collate_pairs(batch, 1, pack_length, shares_prefixes(model)),
        loss_fn,
        lambda batch: float(batch["weight"].sum()),
        pairs,
        device=device,
        mixed_precision=mixed_precision,
        warmup=warmup,
        steps=steps,
    )
    result.tokens_per_step = pairs * (prompt_len + 2 * response_len)
    return result


def grpo_step(
    shape: Shape = LLAMA_0_5B,
    device: str = "cuda",
    dtype_name: str = "bfloat16",
    prompts: int = 8,
    group_size: int = 4,
    max_new_tokens: int = 128,
    warmup: int = 1,
    steps: int = 2,
) -> StepResult:
    """GRPO steps as tether's online loop runs them: sample G responses per gym prompt with tether's
    sampler, reference log-probs, the gym judge's score, group advantages, the clipped policy loss with
    β·KL, AdamW. The model's weights are in ``dtype_name``; tokens/s counts the tokens trained on (each
    prompt once per group) over the whole step, sampling included."""
    import torch

    from tether.algorithms.online_batch import forward, make_experience
    from tether.algorithms.policy_gradient import pg_advantages, pg_loss
    from tether.config import PGConfig
    from tether.engine.optim import build_optimizer
    from tether.gym import get_task
    from tether.judges import FunctionJudge
    from tether.models import train_tokenizer
    from tether.models.value import PolicyValue

    task = get_task("reviews")
    tokenizer = train_tokenizer(task.pretrain_texts()[:500], vocab_size=512)
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")]
    policy = build_llama(shape, device, getattr(torch, dtype_name), stops, tokenizer.pad_token_id)
    reference = copy.deepcopy(policy).requires_grad_(False).eval()
    config = PGConfig(
        batch_size=prompts,
        group_size=group_size,
        max_new_tokens=max_new_tokens,
        minibatch_size=prompts * group_size,
    )
    module = PolicyValue(policy, "none")
    optimizer = build_optimizer(
        module.named_parameters(), 1e-5, config.weight_decay, (config.adam_beta1, config.adam_beta2)
    )
    scorer, batch_prompts, state = FunctionJudge(task.gold_rewards), task.prompts("train", n=prompts), {}

    def step() -> tuple[int, float]:
        experience = make_experience(
            module, reference, tokenizer, scorer, batch_prompts, config, config.kl_coef
        )
        pg_advantages(experience, config, state)
        out = forward(module, experience, config.temperature)
        if experience.old_logprobs is None:  # the single on-policy update: π_old = π
            experience.old_logprobs = out["logprobs"].detach()
        loss, _ = pg_loss(out, experience, config, config.kl_coef)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        prompt_tokens = int(experience.attention_mask[:, : experience.prompt_length].sum()) // group_size
        return prompt_tokens + int(experience.response_mask.sum()), float(loss.detach())

    tokens, seconds, loss = _timed(step, device, warmup, steps)
    params = sum(p.numel() for p in policy.parameters())
    return StepResult(params, tokens, seconds, loss, _memory_gb(device))


# ----------------------------------------------------------------------------------------- subprocesses


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


# ------------------------------------------------------------------------------------------- the report


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


if __name__ == "__main__":
    sys.exit(main())
