"""The GPU check (tether/doctor/, scripts/gpu_check.sh) as far as a CPU can take it: it skips cleanly
without CUDA, its arithmetic and table are right, the budget and failure capture work, and the SFT, DPO
and GRPO steps it times run through tether's code on a tiny model."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tether import doctor
from tether.doctor import Row, Section, Shape

REPO = Path(__file__).resolve().parents[1]
NO_CUDA_LINE = "gpu_check: no CUDA device found; nothing to check (skipped)"


def test_without_cuda_it_prints_one_line_writes_the_report_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(doctor, "_cuda_available", lambda: False)
    report = tmp_path / "sub" / "gpu_check.md"
    assert doctor.main(["--out", str(report)]) == 0
    assert capsys.readouterr().out == NO_CUDA_LINE + "\n"
    assert report.read_text() == "# tether GPU check\n\nskipped: no CUDA device found; nothing to check.\n"


def test_the_script_skips_without_cuda_and_writes_under_out(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "OUT": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == NO_CUDA_LINE
    assert "no CUDA device found" in (tmp_path / "gpu_check.md").read_text()


def test_a_bad_budget_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        doctor.main(["--budget", "-5"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "gpu_check: error: --budget must be positive, not -5"


def test_mfu_is_six_n_tokens_per_second_over_the_peak():
    # 6 · 511e6 params · 20,000 tokens/s = 6.132e13 FLOP/s; over 989e12 FLOP/s: 0.0620020…
    assert doctor.mfu(511_000_000, 20_000.0, 989e12) == pytest.approx(0.0620020222, rel=1e-9)
    assert doctor.mfu(1_000_000_000, 1_000.0, 6e12) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40", None),
        ("Tesla V100-SXM2-16GB", None),
    ],
)
def test_peak_table_matches_device_names_by_whole_words(name, tflops):
    assert doctor.peak_bf16_flops(name) == (None if tflops is None else tflops * 1e12)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_sections_share_the_budget_and_a_failure_does_not_stop_the_rest():
    clock = FakeClock()
    given = []

    def takes(seconds, result="done"):
        def run(limit):
            given.append(limit)
            clock.now += seconds
            return result

        return run

    def fails(limit):
        clock.now += 5
        raise ValueError("shapes differ\nsecond line")

    def not_here(limit):
        raise doctor.Skip("1 GPU")

    def stopped(limit):
        clock.now += limit
        raise doctor.OutOfTime(f"not done after {limit:.0f} s")

    sections = [
        Section("first", takes(30, "30 s of work"), max_seconds=50),
        Section("broken", fails),
        Section("needs datasets", takes(1), needs=("datasets",)),
        Section("two GPUs", not_here),
        Section("long", stopped, max_seconds=40),
        Section("too big now", takes(1), min_seconds=30),  # 100 − 75 = 25 s left
        Section("small", takes(25, "fits")),  # the budget is then spent
        Section("after the budget", takes(1), min_seconds=1),
    ]
    rows = doctor.run_sections(sections, budget_s=100, missing=["datasets"], clock=clock)
    assert [(r.name, r.status, r.seconds, r.result) for r in rows] == [
        ("first", "ok", 30.0, "30 s of work"),
        ("broken", "FAILED: ValueError: shapes differ", 5.0, ""),
        ("needs datasets", "skipped: needs datasets", 0.0, ""),
        ("two GPUs", "skipped: 1 GPU", 0.0, ""),
        ("long", "stopped: time budget", 40.0, "not done after 40 s"),
        ("too big now", "skipped: time budget", 0.0, ""),
        ("small", "ok", 25.0, "fits"),
        ("after the budget", "skipped: time budget", 0.0, ""),
    ]
    assert given == [50, 25]  # min(left, max_seconds): 100 → 50; 100 − 75 → 25


def test_failure_notes_are_listed_under_the_table():
    def tests_fail(limit):
        raise doctor.Failure(
            "2 tests failed", ["tests/a.py::t1 - AssertionError: 1 != 2", "tests/b.py::t2 - x"]
        )

    rows = doctor.run_sections([Section("tests", tests_fail)], budget_s=10)
    assert rows[0].notes == ["tests/a.py::t1 - AssertionError: 1 != 2", "tests/b.py::t2 - x"]
    assert doctor.format_table(rows).endswith(
        "\n\ntests:\n\n- tests/a.py::t1 - AssertionError: 1 != 2\n- tests/b.py::t2 - x\n"
    )


def test_format_table_escapes_pipes_and_rounds_seconds():
    rows = [
        Row("SFT step", "ok", 12.345, "511.0M params, 40,000 tokens/s"),
        Row("a|b", "skipped: 1 GPU", 0.0),
    ]
    assert doctor.format_table(rows) == (
        "| check | status | time (s) | result |\n"
        "| --- | --- | ---: | --- |\n"
        "| SFT step | ok | 12.3 | 511.0M params, 40,000 tokens/s |\n"
        "| a\\|b | skipped: 1 GPU | 0.0 |  |\n"
    )


def test_parse_pytest_counts_and_sorts_failures_by_cause():
    output = "\n".join(
        [
            "........F...F",
            "=========================== short test summary info ============================",
            "FAILED tests/data/test_readers.py::test_hf_folder - ModuleNotFoundError: No module named 'datasets'",
            "FAILED tests/engine/test_trainer.py::test_resume - RuntimeError: Expected all tensors on one device",
            "ERROR tests/models/test_gguf.py - ModuleNotFoundError: No module named 'gguf.constants'",
            "2 failed, 296 passed, 1 skipped, 3 deselected, 1 error in 81.23s (0:01:21)",
        ]
    )
    counts, wanting, failed = doctor.parse_pytest(output, missing=["datasets", "gguf"])
    assert counts == {"failed": 2, "passed": 296, "skipped": 1, "deselected": 3, "error": 1}
    assert wanting == [
        "tests/data/test_readers.py::test_hf_folder - ModuleNotFoundError: No module named 'datasets'",
        "tests/models/test_gguf.py - ModuleNotFoundError: No module named 'gguf.constants'",
    ]
    assert failed == [
        "tests/engine/test_trainer.py::test_resume - RuntimeError: Expected all tensors on one device"
    ]


def test_run_logged_keeps_the_log_and_reports_errors_and_timeouts(tmp_path):
    log = tmp_path / "run.log"
    assert doctor.run_logged([sys.executable, "-c", "print('fine')"], 60, log) == "fine\n"
    assert log.read_text() == "fine\n"
    failing = "import sys; print('step 1'); sys.exit('ValueError: bad shape')"
    with pytest.raises(RuntimeError, match=r"^exit status 1: ValueError: bad shape \(log: run.log\)$"):
        doctor.run_logged([sys.executable, "-c", failing], 60, log)
    with pytest.raises(doctor.OutOfTime, match="not done after 2 s"):
        doctor.run_logged(
            [sys.executable, "-c", "import time; print('x', flush=True); time.sleep(30)"], 2, log
        )
    assert log.read_text() == "x\n"


TINY = Shape(vocab=600, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128)
# 600·64 embedding (tied) + 2 layers · (q 64·64 + k, v 64·32 each + o 64·64 + MLP 3·64·128 + 2 norms of 64)
# + the final norm's 64
TINY_PARAMS = 600 * 64 + 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 2 * 64) + 64


def test_the_timed_steps_run_through_tethers_code_on_cpu():
    sft = doctor.sft_step(TINY, "cpu", "no", batch=2, seq_len=32, warmup=0, steps=1)
    dpo = doctor.dpo_step(TINY, "cpu", "no", pairs=2, prompt_len=8, response_len=8, warmup=0, steps=1)
    grpo = doctor.grpo_step(
        TINY, "cpu", "float32", prompts=2, group_size=2, max_new_tokens=4, warmup=0, steps=1
    )
    assert TINY_PARAMS == 112_448
    assert (sft.params, dpo.params, grpo.params) == (TINY_PARAMS,) * 3
    assert sft.tokens_per_step == 2 * 32 and dpo.tokens_per_step == 2 * (8 + 2 * 8)
    # 2 chat-templated prompts of 26 tokens, each once, and 2 × 2 responses of 1 to 4 tokens
    assert 2 * 26 + 4 <= grpo.tokens_per_step <= 2 * 26 + 16
    for result in (sft, dpo, grpo):
        assert result.seconds_per_step > 0 and math.isfinite(result.loss)
    assert sft.loss == pytest.approx(6.4, abs=0.3)  # ln 600 = 6.40 for a fresh model
    assert sft.describe(None).startswith("0.1M params, 64 tokens/step, ")
    assert f", MFU {doctor.mfu(TINY_PARAMS, sft.tokens_per_s, 1e9):.1%}, " in sft.describe(1e9)


def test_check_reload_loads_the_saved_folder_and_sees_the_weights_move(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from tether.models import save_model

    start, saved = tmp_path / "start", tmp_path / "saved"
    doctor.save_tiny_model(start)
    model = AutoModelForCausalLM.from_pretrained(start)
    save_model(model, None, saved)
    with pytest.raises(RuntimeError, match="saved: the saved weights equal the starting ones"):
        doctor.check_reload(start, saved)
    with torch.no_grad():
        model.model.norm.weight.add_(0.25)
    save_model(model, None, saved)
    assert doctor.check_reload(start, saved).endswith("no missing keys, max |Δw| 2.5e-01)")
