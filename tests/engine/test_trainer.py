"""Invariants of the training loop: gradient accumulation, resume, schedule."""

import itertools
import math

import pytest
import torch

from tether.algorithms.common import count_loss_tokens, lm_batch_loss
from tether.config import TrainConfig
from tether.data import Record
from tether.data.formats import parse_sft
from tether.data.tokenize import pad_collate, tokenize_sft
from tether.engine import Trainer
from tether.engine.checkpoint import list_checkpoints
from tether.engine.logging import read_metrics
from tether.engine.optim import lr_multiplier
from tether.gym import get_task
from tether.models import TokenLogProbs


@pytest.fixture
def sft_data(tokenizer):
    rows = get_task("reviews").sft_examples()[:48]
    return [tokenize_sft(tokenizer, parse_sft(Record(r, "gym", i)), 128) for i, r in enumerate(rows)]


def train(config, model, data, tokenizer, loss_fn=lm_batch_loss):
    trainer = make_trainer(config, model, data, tokenizer, loss_fn)
    trainer.fit()
    return trainer


def config(tmp_path, **overrides):
    base = dict(
        output_dir=str(tmp_path),
        learning_rate=1e-2,
        max_steps=3,
        progress=False,
        tensorboard=False,
        log_every=1,
        warmup_ratio=0.0,
    )
    return TrainConfig(**{**base, **overrides})


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def make_trainer(config, model, data, tokenizer, loss_fn=lm_batch_loss):
    return Trainer(
        config,
        TokenLogProbs(model),
        data,
        lambda examples: pad_collate(examples, tokenizer.pad_token_id),
        loss_fn=loss_fn,
        count_fn=count_loss_tokens,
        eval_data=data[:8],
    )


def step_gradients(trainer):
    """Gradients of the first optimiser step (the optimiser is kept from stepping and clearing them)."""
    trainer.optimizer.step = lambda *args, **kwargs: None
    trainer.optimizer.zero_grad = lambda *args, **kwargs: None
    trainer.train_step()
    return {n: p.grad.clone() for n, p in trainer.unwrapped().named_parameters()}


def test_grad_accumulation_4x1_equals_1x4(tmp_path, make_model, sft_data, tokenizer):
    # Examples have different numbers of response tokens, so this holds only because the loss is
    # normalised by the token count of the whole step, not of each micro-batch.
    assert len({sum(label != -100 for label in e.labels) for e in sft_data[:4]}) > 1
    one_batch = make_trainer(
        config(tmp_path / "a", batch_size=4, grad_accum_steps=1), make_model(1), sft_data, tokenizer
    )
    accumulated = make_trainer(
        config(tmp_path / "b", batch_size=1, grad_accum_steps=4), make_model(1), sft_data, tokenizer
    )
    assert one_batch.step_indices(0) == [[i for m in accumulated.step_indices(0) for i in m]]
    expected, got = step_gradients(one_batch), step_gradients(accumulated)
    assert sum(g.abs().sum().item() for g in expected.values()) > 0
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7)

    # And the whole trajectory: three AdamW steps end at the same weights.
    models = [make_model(seed=1), make_model(seed=1)]
    train(config(tmp_path / "c", batch_size=4, grad_accum_steps=1), models[0], sft_data, tokenizer)
    train(config(tmp_path / "d", batch_size=1, grad_accum_steps=4), models[1], sft_data, tokenizer)
    for name, value in weights(models[0]).items():
        torch.testing.assert_close(weights(models[1])[name], value, atol=1e-4, rtol=0)


def test_resume_after_interruption_equals_uninterrupted(tmp_path, make_model, sft_data, tokenizer):
    uninterrupted = make_model(seed=2)
    train(config(tmp_path / "full", max_steps=6, batch_size=4), uninterrupted, sft_data, tokenizer)

    calls = {"n": 0}

    def crashing_loss(module, batch):
        calls["n"] += 1
        if calls["n"] > 5:  # dies during step 6, after the checkpoint of step 4
            raise KeyboardInterrupt
        return lm_batch_loss(module, batch)

    interrupted_dir = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(
            config(interrupted_dir, max_steps=6, batch_size=4, save_every=2),
            make_model(seed=2),
            sft_data,
            tokenizer,
            loss_fn=crashing_loss,
        )
    assert [p.name for p in list_checkpoints(interrupted_dir)] == ["step-2", "step-4"]

    resumed = make_model(seed=99)  # a different init: every weight must come from the checkpoint
    trainer = train(
        config(interrupted_dir, max_steps=6, batch_size=4, save_every=2, resume=True),
        resumed,
        sft_data,
        tokenizer,
    )
    assert trainer.step == 6
    full = weights(uninterrupted)
    for name, value in weights(resumed).items():
        assert (value - full[name]).abs().max().item() <= 1e-6, name
    # The log holds each step once: the replayed step 5 replaced the one logged before the crash.
    steps = [row["step"] for row in read_metrics(interrupted_dir / "metrics.jsonl") if "loss" in row]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_lr_schedule_hand_worked():
    # 10 steps, 2 of warm-up: 0.5, 1.0, then cosine from 1 at step 2 down to min_ratio at step 9.
    assert lr_multiplier(0, 10, 2, "cosine", 0.1) == 0.5
    assert lr_multiplier(1, 10, 2, "cosine", 0.1) == 1.0
    assert lr_multiplier(2, 10, 2, "cosine", 0.1) == 1.0
    assert abs(lr_multiplier(9, 10, 2, "cosine", 0.1) - 0.1) < 1e-12
    halfway = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3.5 / 7))
    assert abs(lr_multiplier(5.5, 10, 2, "cosine", 0.1) - halfway) < 1e-12
    assert abs(lr_multiplier(9, 10, 2, "linear", 0.0)) < 1e-12
    assert lr_multiplier(7, 10, 2, "constant", 0.0) == 1.0


def test_too_little_data_is_a_clear_error(tmp_path, make_model, sft_data, tokenizer):
    from tether import TetherError

    with pytest.raises(TetherError, match="fewer than one step's global batch"):
        train(config(tmp_path, batch_size=64), make_model(), sft_data, tokenizer)


def test_grouped_batches_keep_a_group_together(tmp_path, make_model, sft_data, tokenizer):
    groups = [i % 8 for i in range(len(sft_data))]  # 8 groups of 6, members spread over the data
    trainer = Trainer(
        config(tmp_path, batch_size=4),
        TokenLogProbs(make_model()),
        sft_data,
        lambda examples: pad_collate(examples, tokenizer.pad_token_id),
        loss_fn=lm_batch_loss,
        count_fn=count_loss_tokens,
        groups=groups,
    )
    epochs = []
    for epoch in range(2):
        steps = range(epoch * trainer.steps_per_epoch, (epoch + 1) * trainer.steps_per_epoch)
        order = [i for step in steps for micro in trainer.step_indices(step) for i in micro]
        assert sorted(order) == list(range(len(sft_data)))  # each example once per epoch
        runs = [groups[i] for i in order]
        changes = sum(a != b for a, b in itertools.pairwise(runs))
        assert changes == 7  # 8 groups, each in one contiguous run
        epochs.append(runs[::6])
    assert epochs[0] != epochs[1]  # the group order is reshuffled each epoch


def test_stages_of_one_process_may_differ_in_precision(tmp_path, make_model, sft_data, tokenizer):
    # Accelerate keeps one precision per process: the pipeline's next stage used to fail on a change.
    losses = {}
    for precision in ("bf16", "no"):
        trainer = make_trainer(
            config(tmp_path / precision, mixed_precision=precision, max_steps=1),
            make_model(1),
            sft_data,
            tokenizer,
        )
        assert trainer.accelerator.mixed_precision == precision
        losses[precision] = trainer.train_step()["loss"]
    # The same first batch and weights: bf16 autocast moves the loss a little, not a lot.
    assert losses["bf16"] != losses["no"] and losses["bf16"] == pytest.approx(losses["no"], rel=0.02)


def test_a_compiled_run_takes_the_eager_run_s_steps(tmp_path, make_model, sft_data, tokenizer):
    """``torch_compile=true`` compiles the trained module in place: the same two AdamW steps as eager (up to
    the compiled kernels' float reassociation), the same parameter names saved."""
    models = {"eager": make_model(seed=3, num_layers=1), "compiled": make_model(seed=3, num_layers=1)}
    trainers = {
        name: train(
            config(tmp_path / name, max_steps=2, batch_size=4, torch_compile=name == "compiled"),
            model,
            sft_data,
            tokenizer,
        )
        for name, model in models.items()
    }
    assert trainers["compiled"].unwrapped()._compiled_call_impl is not None
    assert trainers["eager"].unwrapped()._compiled_call_impl is None
    eager, compiled = weights(models["eager"]), weights(models["compiled"])
    assert compiled.keys() == eager.keys()
    start = weights(make_model(seed=3, num_layers=1))
    assert any(not torch.equal(eager[n], start[n]) for n in start)  # the steps moved the weights
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, atol=1e-5, rtol=1e-4, msg=name)
