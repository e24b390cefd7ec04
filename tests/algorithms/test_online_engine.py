"""The online loop on the engine's Session: every field a stage inherits from TrainConfig is honoured or
refused — gradient accumulation over minibatches (the same step as one large minibatch), mixed precision
in the loop's forwards, ``log_every`` — and num_epochs, eval_every, eval_batch_size and torch_compile are
one-line errors."""

import copy
import json
import math

import pytest
import torch

from tether.algorithms.distribution_matching import run_distribution_matching
from tether.algorithms.nash_md import run_nash_md
from tether.algorithms.online import update
from tether.algorithms.online_batch import LoopHooks, add_logprobs, score_experience
from tether.algorithms.online_dpo import run_online_dpo
from tether.algorithms.policy_gradient import pg_advantages, run_policy_gradient
from tether.algorithms.ppo import ppo_advantages, run_ppo
from tether.config import (
    ConfigError,
    DistributionMatchingConfig,
    NashMDConfig,
    OnlineDPOConfig,
    PGConfig,
    PPOConfig,
    describe,
    load_config,
)
from tether.engine.session import Session, build_accelerator
from tether.models import load_causal_lm, save_model
from tether.models.value import PolicyValue
from tether.rollout.experience import concat, sample

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
    ("name", "value"),
    [("num_epochs", 2.0), ("eval_every", 5), ("eval_batch_size", 8), ("torch_compile", True)],
)
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_field_the_online_loop_cannot_use_is_a_one_line_error_naming_it(tmp_path, stage, name, value):
    config_cls, runner = STAGES[stage]
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as caught:  # refused by the loader, and not shown by --help
        load_config(
            config_cls,
            None,
            [f"model={tmp_path / 'absent'}", f"output_dir={out}", f"{name}={str(value).lower()}"],
        )
    message = str(caught.value)
    assert message.startswith(f"command line: field '{name}': not used: ") and "\n" not in message
    assert f"  {name} (" not in describe(config_cls)
    config = config_cls(model=str(tmp_path / "absent"), output_dir=str(out), **{name: value})
    with pytest.raises(ConfigError) as caught:  # a config built in code: refused by the loop
        runner(config)
    message = str(caught.value)
    assert message.startswith(f"field '{name}': not used: ") and "\n" not in message
    assert not out.exists()  # refused before a model (here: absent) was looked for


# The policy-gradient fields a stage whose loss has no advantages (or no loop β) never reads.
NOT_READ = {
    "online_dpo": ["clip_eps=0.3", "ent_coef=0.01", "whiten_advantages=true", "loss_agg=seq_mean_token_sum",
                   "target_kl=2", "kl_horizon=500", "minibatch_order=rows"],
    "dpg": ["clip_eps=0.3", "ent_coef=0.01", "whiten_advantages=true", "loss_agg=seq_mean_token_sum",
            "target_kl=2", "kl_horizon=500", "minibatch_order=rows"],
    "nash_md": ["ent_coef=0.01", "whiten_advantages=true", "loss_agg=seq_mean_token_sum", "minibatch_order=rows"],
}  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "setting"), [(stage, setting) for stage, settings in NOT_READ.items() for setting in settings]
)
def test_a_policy_gradient_field_a_stage_never_reads_is_refused(tmp_path, stage, setting):
    config_cls, _ = STAGES[stage]
    name = setting.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^command line: field '{name}': not used: the "):
        load_config(config_cls, None, [f"model={tmp_path / 'absent'}", setting])
    assert f"  {name} (" not in describe(config_cls)


def test_nash_md_reads_clip_eps_and_the_adaptive_beta(tmp_path):
    config = load_config(NashMDConfig, None, ["clip_eps=0.3", "target_kl=2", "kl_horizon=500"])
    assert (config.clip_eps, config.target_kl, config.kl_horizon) == (0.3, 2.0, 500)


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


# ------------------------------------------------------------------------------- gradient accumulation

PROMPTS = [
    "review the lid.",
    "write a review of the kettle.",
    "review the blue mug please.",
    "a short review",
]


def unequal_batch(model, reference, tokenizer, config):
    """4 prompts × 2 samples whose groups have at most 2, 4, 6 and 6 response tokens (no split of the
    groups into two minibatches of 2 has equal token counts), scored, with log-probs and advantages."""
    torch.manual_seed(0)
    parts = [
        sample(model.policy, tokenizer, [prompt], 2, longest)
        for prompt, longest in zip(PROMPTS, (2, 4, 6, 6))
    ]
    experience = concat(parts, tokenizer.pad_token_id)
    experience.extras["judge_pairwise"] = torch.zeros(8)
    add_logprobs(model, reference, experience, config, LoopHooks())
    scores = torch.tensor([1.0, 0.0, 0.5, 2.0, -1.0, 3.0, 0.0, 1.0])
    score_experience(experience, scores, config, config.kl_coef)
    if isinstance(config, PPOConfig):
        ppo_advantages(experience, config)
    else:
        pg_advantages(experience, config, {"baseline": 0.0})
    tokens = experience.response_mask.sum(-1).view(4, 2).sum(-1).tolist()
    splits = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    assert all(tokens[a] + tokens[b] != sum(tokens) / 2 for a, b in splits), tokens
    return experience


def accumulated_step(model, experience, config, tmp_path):
    """``update`` on a copy of ``model`` and ``experience``; the gradient at each optimiser step and the
    weights after them."""
    session = Session(config, copy.deepcopy(model), total_steps=1, accelerator=build_accelerator("no"))
    real_step, gradients = session.optimizer.step, []

    def step(*args, **kwargs):
        gradients.append(
            {n: p.grad.clone() for n, p in session.unwrapped().named_parameters() if p.grad is not None}
        )
        return real_step(*args, **kwargs)

    session.optimizer.step = step
    session.set_learning_rate(0)
    torch.manual_seed(1)  # the same shuffle of minibatches in every run
    row = update(
        session, copy.deepcopy(experience), config, loss_fn(config), count_fn(config), config.kl_coef, 0
    )
    session.close()
    weights = {n: p.detach().clone() for n, p in session.unwrapped().named_parameters()}
    return gradients, weights, row


def loss_fn(config):
    from tether.algorithms.policy_gradient import pg_loss
    from tether.algorithms.ppo import ppo_loss

    return ppo_loss if isinstance(config, PPOConfig) else pg_loss


def count_fn(config):
    from tether.algorithms.actor_loss import loss_items

    return loss_items


@pytest.mark.parametrize(
    ("stage", "settings"),
    [
        # GRPO's KL loss term (k3) and an entropy bonus, token-mean and sequence-mean aggregation: one
        # optimiser step whose π_old is the update's own forward in both runs
        ("grpo", {"loss_agg": "token_mean"}),
        ("grpo", {"loss_agg": "seq_mean_token_mean"}),
        # minibatches of rows shuffled across prompts (TRL's order): groups split, the same gradient
        ("grpo", {"loss_agg": "seq_mean_token_mean", "minibatch_order": "rows"}),
        # PPO: value head, KL in the reward, π_old and V from a separate forward
        ("ppo", {"critic": "head"}),
    ],
)
def test_two_accumulated_minibatches_of_4_step_as_one_minibatch_of_8(
    make_model, tokenizer, tmp_path, stage, settings
):
    cls, mode = (PPOConfig, "head") if stage == "ppo" else (PGConfig, "none")
    common = dict(
        output_dir=str(tmp_path),
        group_size=2,
        batch_size=4,
        ppo_epochs=1,
        kl_coef=0.1,
        ent_coef=0.01 if stage == "grpo" else 0.0,
        max_grad_norm=0.0,  # raw gradients compared
        learning_rate=1e-3,
        tensorboard=False,
        progress=False,
        **settings,
    )
    one = cls(**common, minibatch_size=8)
    accumulated = cls(**common, minibatch_size=4, grad_accum_steps=2)
    separate = cls(**common, minibatch_size=4)
    torch.manual_seed(0)
    model = PolicyValue(make_model(seed=0), mode)
    experience = unequal_batch(model, make_model(seed=5).requires_grad_(False), tokenizer, one)

    expected, expected_weights, _ = accumulated_step(model, experience, one, tmp_path / "one")
    got, got_weights, row = accumulated_step(model, experience, accumulated, tmp_path / "acc")
    split, _, _ = accumulated_step(model, experience, separate, tmp_path / "sep")
    assert (len(expected), len(got), len(split)) == (1, 1, 2)  # accumulation: one step, not two
    assert sum(g.abs().sum().item() for g in expected[0].values()) > 0
    for name, gradient in expected[0].items():
        torch.testing.assert_close(got[0][name], gradient, atol=1e-6, rtol=1e-5, msg=name)
    for name, value in expected_weights.items():
        torch.testing.assert_close(got_weights[name], value, atol=1e-6, rtol=0, msg=name)
    assert math.isfinite(row["grad_norm"]) and row["grad_norm"] > 0
    # Without accumulation the first of two steps sees half the batch: a different gradient.
    assert any(not torch.allclose(split[0][n], g, atol=1e-6) for n, g in expected[0].items())


def test_an_accumulated_grpo_run_ends_where_one_large_minibatch_does(tiny_folder, tmp_path):
    """Through the whole loop (sampling, the single on-policy update, AdamW): one iteration of 2 prompts × 2
    samples, one minibatch of 4 rows against 2 accumulated minibatches of 2 rows. (One iteration only: the
    second would sample after the accumulated run's minibatch shuffle drew random numbers.)"""
    models = {}
    for name, extra in (("one", ["minibatch_size=4"]), ("acc", ["minibatch_size=2", "grad_accum_steps=2"])):
        torch.manual_seed(0)
        run_policy_gradient(
            load_config(
                PGConfig,
                None,
                short_run(tiny_folder, tmp_path / name, "max_steps=1", "learning_rate=1e-3", *extra),
            )
        )
        models[name] = load_causal_lm(str(tmp_path / name)).state_dict()
    start = load_causal_lm(tiny_folder).state_dict()
    assert any(not torch.equal(models["one"][n], start[n]) for n in start)
    for name, tensor in models["one"].items():
        torch.testing.assert_close(models["acc"][name], tensor, atol=1e-6, rtol=0, msg=name)
