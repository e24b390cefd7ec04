"""kill -9 at a random moment, then ``resume=true``: the weights are bit-identical to an uninterrupted run.

Each stage runs as its own process (``python -m tether STAGE``), checkpointing every step. A second
process is killed with SIGKILL at a random moment (after a random step's checkpoint, a random fraction
of a step later), resumed, killed again later in the run, and resumed to the end: the kills land
mid-step, mid-log or mid-checkpoint (a checkpoint is written to a temporary folder and renamed; a metrics
row cut short is dropped on resume). The kill moments come from
a generator seeded by the stage and ``KILL_SEED`` (default 0) and are printed, so a failure can be
replayed and other moments tried (``KILL_SEED=3 pytest tests/test_kill_resume.py -s``)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tether.engine.checkpoint import list_checkpoints
from tether.engine.logging import read_metrics
from tether.gym import get_task
from tether.models import save_model

COMMON = ["progress=false", "tensorboard=false", "save_every=1", "keep_checkpoints=2", "batch_size=2"]
ONLINE = ["reward=gym:reviews", "n_prompts=16", "group_size=2", "max_new_tokens=6", "minibatch_size=2"]
STAGES = {
    "sft": ["data={data}/sft.jsonl", "max_steps=30", "max_length=64"],
    "dpo": ["data={data}/pairs.jsonl", "max_steps=30", "max_length=64"],
    "ppo": [*ONLINE, "max_steps=10", "target_kl=0.5"],
    "grpo": [*ONLINE, "max_steps=10", "ppo_epochs=2"],
}


@pytest.fixture
def setup(make_model, tokenizer, tmp_path):
    """A tiny model folder and the SFT and preference data (chosen: a review's own response; rejected:
    another review's)."""
    save_model(make_model(seed=1), tokenizer, tmp_path / "tiny")
    examples = get_task("reviews").sft_examples()[:64]
    with open(tmp_path / "sft.jsonl", "w", encoding="utf-8") as out:
        for example in examples:
            out.write(json.dumps({"messages": example["messages"]}) + "\n")
    with open(tmp_path / "pairs.jsonl", "w", encoding="utf-8") as out:
        for example, other in zip(examples, examples[1:] + examples[:1]):
            prompt, chosen = example["messages"][0]["content"], example["messages"][1]["content"]
            out.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": other["messages"][1]["content"]}) + "\n")  # fmt: skip
    return tmp_path


def command(stage: str, folder: Path, out: Path, *extra: str) -> list[str]:
    specific = [arg.format(data=folder) for arg in STAGES[stage]]
    return [sys.executable, "-m", "tether", stage, f"model={folder / 'tiny'}", f"output_dir={out}",
            *COMMON, *specific, *extra]  # fmt: skip


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}


def latest_step(out: Path) -> int:
    found = list_checkpoints(out)
    return int(found[-1].name.split("-")[1]) if found else 0


def kill_after_checkpoint(cmd: list[str], out: Path, step: int, delay: float) -> int:
    """Start ``cmd``, SIGKILL it ``delay`` seconds after its checkpoint of ``step`` (or a later one)
    appears; its exit code (−9 when the kill landed before the run finished)."""
    process = subprocess.Popen(cmd, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while latest_step(out) < step and process.poll() is None:
        time.sleep(0.005)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return process.returncode


def weights(folder: Path) -> dict:
    return load_file(str(next(folder.glob("*.safetensors"))))


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_9_at_a_random_moment_then_resume_gives_bit_identical_weights(setup, tmp_path, stage):
    rng = random.Random(f"kill-{stage}-{os.environ.get('KILL_SEED', '0')}")
    straight = tmp_path / "straight"
    subprocess.run(command(stage, setup, straight), env=environment(), check=True, capture_output=True)

    killed = tmp_path / "killed"
    total = int(next(a for a in STAGES[stage] if a.startswith("max_steps=")).split("=")[1])
    # the first kill after a checkpoint in the first third, the second in the second third of the run,
    # each a random fraction of a step later (a step takes tens to hundreds of milliseconds here)
    steps = [rng.randint(1, total // 3), rng.randint(total // 3 + 1, 2 * total // 3)]
    delays = [rng.uniform(0.0, 0.1) for _ in steps]
    codes = []
    for step, delay in zip(steps, delays):  # killed twice: the second run resumes, then is killed again
        cmd = command(stage, setup, killed, *(["resume=true"] if codes else []))
        codes.append(kill_after_checkpoint(cmd, killed, step, delay))
    print(f"{stage}: killed after the checkpoints of steps {steps}, {delays} s later → exit codes {codes}")
    assert codes == [-signal.SIGKILL] * 2, "a kill landed after the run had finished: lengthen the run"
    subprocess.run(command(stage, setup, killed, "resume=true"), env=environment(), check=True, capture_output=True)  # fmt: skip

    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys()
    different = [name for name in a if not a[name].equal(b[name])]
    assert not different, f"weights differ after resume: {different[:5]}"
    # each step is logged once, in order, as in the uninterrupted run
    steps = [row["step"] for row in read_metrics(killed / "metrics.jsonl") if "loss" in row]
    assert steps == [row["step"] for row in read_metrics(straight / "metrics.jsonl") if "loss" in row]
