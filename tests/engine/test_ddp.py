"""Two CPU processes under DDP (gloo) end at the same weights as one process with the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "one.safetensors"), "4", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    double = subprocess.run(
        [*torchrun, str(WORKER), str(tmp_path / "two.safetensors"), "2", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-2000:]
    assert "processes=2" in double.stdout and "processes=1" in single.stdout
    one, two = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    start_moved = False
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, atol=1e-4, rtol=0)
        start_moved = start_moved or value.abs().sum() > 0
    assert start_moved
