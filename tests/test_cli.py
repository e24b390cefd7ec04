"""The command line as a user meets it: errors are one line, exit 2, no traceback, nothing lost."""

import subprocess
import sys

import pytest

from tether.cli import main


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "tether", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_lists_config_fields():
    result = run("sft", "--help")
    assert result.returncode == 0
    for name in ("learning_rate", "max_length", "lora_r", "grad_accum_steps"):
        assert name in result.stdout
    assert "max_steps (int, default 0)" in result.stdout


def test_help_lists_every_registered_command(capsys):
    from tether.stages import STAGES

    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the summaries
    for name, stage in STAGES.items():
        assert f"{name} {stage.summary}" in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}\n',
            "bad.jsonl:1: field 'messages[1].role': expected one of",
        ),
        (
            '{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": 5}\n',
            "bad.jsonl:2: field 'completion': expected a string",
        ),
        ('{"prompt": "a", "completion": "b"}\nnot json\n', "bad.jsonl:2: invalid JSON"),
    ],
)
def test_malformed_data_is_one_line_error(tmp_path, content, expected):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    result = run("sft", f"data={data}", f"output_dir={out}", "model=smollm2")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert (out / "keep.txt").read_text() == "earlier work"


def test_malformed_config_is_one_line_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("max_steps: 3\nlearnign_rate: 0.1\n")
    assert main(["pretrain", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert f"{config}:2: unknown field 'learnign_rate'; did you mean 'learning_rate'?" in err


def test_unknown_model_is_one_line_error(capsys):
    assert main(["evaluate", "model=/no/such/model"]) == 2
    assert "model '/no/such/model': no such folder" in capsys.readouterr().err


def test_score_with_the_gold_judge(tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    data.write_text(
        '{"prompt": "review the phone.", "completion": "the phone is great."}\n'
        '{"prompt": "review the phone.", "completion": "great great great"}\n'
    )
    out = tmp_path / "out.jsonl"
    assert main(["score", f"data={data}", "judge=gym:reviews", f"output={out}"]) == 0
    import json

    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"records": 2, "mean_score": 0.5}
    assert captured.err == f"tether score: wrote {out}\n"  # one line, and no library noise
    scores = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    # The repeated words cost 0.5 × stutter (2 of 2 word pairs repeat) and 0.5 for not naming the phone.
    assert scores == [1.0, 0.0]


def test_compare_a_policy_with_itself(make_model, tokenizer, tmp_path, capsys):
    from tether.models import save_model

    save_model(make_model(), tokenizer, tmp_path / "m")
    out = tmp_path / "cmp.json"
    args = [
        f"policy={tmp_path / 'm'}",
        f"reference={tmp_path / 'm'}",
        "n_prompts=4",
        "max_new_tokens=6",
        f"output={out}",
    ]
    assert main(["compare", *args]) == 0
    import json

    printed = json.loads(capsys.readouterr().out)
    result = json.loads(out.read_text())
    assert "samples" in result and "samples" not in printed  # lists go to the file, numbers are printed
    assert printed == {k: v for k, v in result.items() if k != "samples"}
    # Same model, same seed: identical samples, so every comparison ties and the KL is exactly 0.
    assert result["win_rate"] == 0.5 and result["policy/kl"] == 0.0
    assert result["policy/gold"] == result["reference/gold"]
