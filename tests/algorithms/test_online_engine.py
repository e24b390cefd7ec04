"""The online loop on the engine's Session: fields a stage inherits from TrainConfig are honoured — mixed
precision in the loop's forwards, ``log_every`` — or refused: num_epochs, eval_every and eval_batch_size
are one-line errors."""

import json
import math

import pytest
import torch

from tether.algorithms.distribution_matching import run_distribution_matching
from tether.algorithms.nash_md import run_nash_md
from tether.algorithms.online_dpo import run_online_dpo
from tether.algorithms.policy_gradient import run_policy_gradient
from tether.algorithms.ppo import run_ppo
from tether.config import (
    ConfigError,
    DistributionMatchingConfig,
    NashMDConfig,
    OnlineDPOConfig,
    PGConfig,
    PPOConfig,
    load_config,
)
from tether.models import save_model

STAGES = {
    "ppo": (PPOConfig, run_ppo),
    "grpo": (PGConfig, run_policy_gradient),
    "online_dpo": (OnlineDPOConfig, run_online_dpo),
    "nash_md": (NashMDConfig, run_nash_md),
    "dpg": (DistributionMatchingConfig, run_distribution_matching),
}


@pytest.fixture
def tiny_folder(make_model, tokenizer, tmp_path):
    save_model(make_model(), tokenizer, tmp_path / "tiny")
    return str(tmp_path / "tiny")


def short_run(tiny_folder, out, *extra):
    return [
        f"model={tiny_folder}",
        "reward=gym:reviews",
        f"output_dir={out}",
        "batch_size=2",
        "group_size=2",
        "max_new_tokens=4",
        "progress=false",
        "tensorboard=false",
        "n_prompts=8",
        *extra,
    ]


# ------------------------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    ("name", "value"), [("num_epochs", "2"), ("eval_every", "5"), ("eval_batch_size", "8")]
)
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_field_the_online_loop_cannot_use_is_a_one_line_error_naming_it(tmp_path, stage, name, value):
    config_cls, runner = STAGES[stage]
    out = tmp_path / "out"
    config = load_config(
        config_cls, None, [f"model={tmp_path / 'absent'}", f"output_dir={out}", f"{name}={value}"]
    )
    with pytest.raises(ConfigError) as caught:
        runner(config)
    message = str(caught.value)
    assert message.startswith(f"field '{name}': not used: ") and "\n" not in message
    assert not out.exists()  # refused before a model (here: absent) was looked for


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 autocast runs on a GPU")
def test_fp16_on_the_cpu_is_a_one_line_error_before_anything_loads(tmp_path):
    config = load_config(PGConfig, None, [f"model={tmp_path / 'absent'}", "mixed_precision=fp16"])
    with pytest.raises(ConfigError) as caught:
        run_policy_gradient(config)
    message = str(caught.value)
    assert message.startswith("field 'mixed_precision': fp16 autocast needs a GPU") and "\n" not in message


# ------------------------------------------------------------------------------------------ honoured


def test_mixed_precision_bf16_autocasts_the_reference_and_update_forwards(tiny_folder, tmp_path, monkeypatch):
    """The policy's output layer is observed in the log-prob forwards of 2-step GRPO runs: bf16 under
    mixed_precision=bf16 in the reference's (inference mode) and the update's (with gradients), fp32 in
    both with the default — also after a bf16 run in the same process."""
    import tether.algorithms.online as online

    seen: list[tuple[str, torch.dtype]] = []
    real_load = online.load_policy

    def load_watched(config):
        model, tokenizer = real_load(config)

        def watch(module, inputs, output):
            kind = (
                "update"
                if torch.is_grad_enabled()
                else "reference"
                if torch.is_inference_mode_enabled()
                else "sample"
            )
            seen.append((kind, output.dtype))

        model.lm_head.register_forward_hook(watch)  # the frozen reference, a deep copy, keeps the hook
        return model, tokenizer

    monkeypatch.setattr(online, "load_policy", load_watched)
    dtypes = {}
    for precision in ("no", "bf16", "no"):  # and back: one process may change precision between runs
        seen.clear()
        out = tmp_path / precision
        row = run_policy_gradient(
            load_config(
                PGConfig, None, short_run(tiny_folder, out, "max_steps=2", f"mixed_precision={precision}")
            )
        )
        assert math.isfinite(row["loss"])
        dtypes[precision] = {
            kind: {dtype for k, dtype in seen if k == kind} for kind in ("sample", "reference", "update")
        }
    assert dtypes["bf16"]["reference"] == {torch.bfloat16} and dtypes["bf16"]["update"] == {torch.bfloat16}
    assert dtypes["no"]["reference"] == {torch.float32} and dtypes["no"]["update"] == {torch.float32}


def test_log_every_is_honoured_online(tiny_folder, tmp_path):
    out = tmp_path / "grpo"
    run_policy_gradient(
        load_config(PGConfig, None, short_run(tiny_folder, out, "max_steps=3", "log_every=2"))
    )
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == [2, 3]  # every 2nd iteration and the last
