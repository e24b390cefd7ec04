"""The registry of commands: each name maps to a config class and a function taking only the config; a
command that fixes a field refuses a conflicting value; what a stage prints and says it wrote."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time

import pytest

from tether.cli import main, numbers_of, written
from tether.config import ConfigError, DistributionMatchingConfig, PGConfig
from tether.stages import STAGES, load_stage_config, quiet_libraries, stage_config


def test_every_stage_runs_from_its_config_alone():
    for name, stage in STAGES.items():
        parameters = list(inspect.signature(stage.run).parameters.values())  # imports stage.runner
        assert len(parameters) == 1, name
        assert stage.summary.endswith("."), name


def test_help_and_config_errors_import_no_training_code():
    """The registry names its functions; reading it (``--help``, building a config) loads no torch."""
    code = (
        "import sys, tether.cli as c\n"
        "c.build_parser().format_help()\n"
        "from tether.stages import load_stage_config\n"
        "load_stage_config('ppo', None, ['kl_coef=0.1'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'tether.algorithms') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("command", "field", "default", "also"),
    [
        ("reinforce", "estimator", "reinforce_baseline", "reinforce_pp"),
        ("rloo", "estimator", "rloo", None),
        ("grpo", "estimator", "grpo", "dr_grpo"),
        ("dpg", "method", "dpg", None),
        ("brain", "method", "brain", None),
    ],
)
def test_a_command_sets_its_fixed_field_and_accepts_its_own_values(command, field, default, also):
    assert getattr(stage_config(command, {}), field) == default
    assert getattr(stage_config(command, {field: default}), field) == default
    if also:
        assert getattr(stage_config(command, {field: also}), field) == also


@pytest.mark.parametrize(
    ("command", "override", "message"),
    [
        ("rloo", "estimator=grpo", "tether rloo runs estimator=rloo; got estimator=grpo (use `tether grpo`)"),
        (
            "grpo",
            "estimator=rloo",
            "tether grpo runs estimator=grpo or dr_grpo; got estimator=rloo (use `tether rloo`)",
        ),
        (
            "reinforce",
            "estimator=dr_grpo",
            "tether reinforce runs estimator=reinforce_baseline or reinforce_pp; got estimator=dr_grpo "
            "(use `tether grpo`)",
        ),
        ("dpg", "method=brain", "tether dpg runs method=dpg; got method=brain (use `tether brain`)"),
        ("brain", "method=dpg", "tether brain runs method=brain; got method=dpg (use `tether dpg`)"),
    ],
)
def test_a_conflicting_value_is_a_one_line_error(command, override, message, capsys):
    assert main([command, override, "max_steps=1"]) == 2
    err = capsys.readouterr().err
    assert err == f"tether {command}: error: command line: {message}\n"


def test_a_conflict_in_a_yaml_file_names_its_line(tmp_path):
    path = tmp_path / "rloo.yaml"
    path.write_text("group_size: 4\nestimator: reinforce_baseline\n")
    with pytest.raises(
        ConfigError, match=f"{path}:2: tether rloo runs estimator=rloo; got estimator=reinforce_baseline"
    ):
        load_stage_config("rloo", str(path))
    config = load_stage_config("brain", None, ["beta=0.2"])
    assert isinstance(config, DistributionMatchingConfig) and (config.method, config.beta) == ("brain", 0.2)
    assert isinstance(load_stage_config("grpo", None, ["estimator=dr_grpo"]), PGConfig)


def test_help_shows_the_commands_own_default(capsys):
    with pytest.raises(SystemExit):
        main(["rloo", "--help"])
    out = capsys.readouterr().out
    assert "estimator (rloo, default 'rloo')" in out
    assert "group_size (int, default 4)" in out


def test_printed_result_keeps_numbers_and_drops_lists():
    result = {
        "accuracy": 0.75,
        "calibration": [{"pairs": 3}],
        "policies": {"dpo": {"gold": 0.5, "samples": ["a", "b"]}, "empty": {"scores": [1.0]}},
        "task": "reviews",
    }
    assert numbers_of(result) == {"accuracy": 0.75, "policies": {"dpo": {"gold": 0.5}}, "task": "reviews"}
    assert numbers_of({}) == {}


def test_written_names_the_folder_and_what_changed_in_it(tmp_path):
    class Config:
        output_dir = str(tmp_path / "dpo")
        output = ""

    folder = tmp_path / "dpo"
    folder.mkdir()
    (folder / "old.txt").write_text("earlier")
    old = time.time() - 100
    os.utime(folder / "old.txt", (old, old))
    started = time.time()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tether_config.yaml", "metrics.jsonl"):
        (folder / name).write_text("x")
    (folder / "tensorboard").mkdir()
    assert written(Config(), started) == f"{folder} (model, metrics.jsonl, tensorboard/)"

    class Scored:
        output = str(tmp_path / "scored.jsonl")

    assert written(Scored(), started) is None  # nothing written
    (tmp_path / "scored.jsonl").write_text("{}\n")
    assert written(Scored(), started) == str(tmp_path / "scored.jsonl")


def test_quiet_libraries_silences_transformers_unless_verbose():
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    try:
        hf_logging.set_verbosity_warning()
        hf_logging.enable_progress_bar()
        quiet_libraries(verbose=True)
        assert hf_logging.get_verbosity() == hf_logging.WARNING and hf_logging.is_progress_bar_enabled()
        quiet_libraries(verbose=False)
        assert hf_logging.get_verbosity() == hf_logging.ERROR
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(before)
        hf_logging.enable_progress_bar()
