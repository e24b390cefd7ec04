"""Model FLOPs, tokens/s and MFU (``engine/flops.py``): the counts against hand-worked values, and every
training row carries them."""

from __future__ import annotations

import types

import pytest
import torch

from tether.engine import flops
from tether.engine.flops import TRAINING, ModelCost, Throughput, matmul_weights
from tether.engine.trainer import batch_work


def test_the_weights_of_a_tiny_llama_are_its_projections_and_unembedding(make_model):
    model = make_model(hidden_size=32, num_layers=2)
    c = model.config
    d, i, v = c.hidden_size, c.intermediate_size, c.vocab_size
    kv = c.num_key_value_heads * (d // c.num_attention_heads)
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * i  # q, k, v, o; gate, up, down
    assert matmul_weights(model) == c.num_hidden_layers * per_layer + d * v  # no embedding lookup
    assert ModelCost.of(model) == ModelCost(c.num_hidden_layers * per_layer + d * v, 2, 32)


def test_an_lstm_counts_its_input_and_recurrent_weights():
    lstm = torch.nn.Sequential(
        torch.nn.Embedding(50, 8), torch.nn.LSTM(8, 16, num_layers=2), torch.nn.Linear(16, 50)
    )
    # layer 1: 4·16·(8 + 16); layer 2: 4·16·(16 + 16); the head 16·50 (biases are not matrix products)
    assert matmul_weights(lstm) == 4 * 16 * 24 + 4 * 16 * 32 + 16 * 50
    assert ModelCost.of(lstm).layers == 0  # no attention


def test_forward_flops_by_hand():
    cost = ModelCost(weights=100, layers=2, hidden=4)
    # 3 rows × 5 positions × (2·100 + 4·2·4·5/2)
    assert cost.forward_flops(3, 5) == 15 * (200 + 80)


def test_a_steps_tokens_are_the_masks_ones_and_its_flops_three_forwards():
    cost = ModelCost(weights=10, layers=1, hidden=2)
    padded = {
        "input_ids": torch.zeros(2, 4, dtype=torch.long),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
    }
    packed = {
        "input_ids": torch.zeros(1, 6, dtype=torch.long),
        "attention_mask": torch.ones(1, 1, 6, 6, dtype=torch.bool),
    }
    tokens, work = batch_work([padded, packed], cost)
    assert tokens == 5 + 6
    assert work == TRAINING * (cost.forward_flops(2, 4) + cost.forward_flops(1, 6))


def test_throughput_rates_and_mfu(monkeypatch):
    clock = iter([100.0, 102.0])
    monkeypatch.setattr(flops.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(flops, "device_peak", lambda device: 1e9)
    meter = Throughput("cpu", processes=2)
    meter.add(tokens=300, flops=5e8)
    row = meter.row()  # 2 s later, this process's share of 2
    assert row == pytest.approx({"tokens_per_s": 300.0, "model_tflops": 5e-4, "mfu": 0.25})


def test_the_measured_peak_is_a_positive_rate_and_leaves_the_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    peak = flops.matmul_peak("cpu", torch.get_num_threads(), sizes=(64, 128), seconds=0.02)
    assert 1e8 < peak < 1e14  # between 0.1 GFLOP/s and 100 TFLOP/s
    assert torch.equal(torch.rand(3), expected)  # measuring it draws nothing from the run's generator


def test_an_online_iteration_counts_sampling_reference_old_and_k_training_passes():
    from tether.algorithms.online import iteration_flops

    policy, module = ModelCost(10, 1, 2), ModelCost(30, 1, 2)
    run = types.SimpleNamespace(costs=(policy, module), config=types.SimpleNamespace(ppo_epochs=2))
    experience = types.SimpleNamespace(sequences=torch.zeros(4, 6), old_logprobs=torch.zeros(4, 3))
    expected = 2 * policy.forward_flops(4, 6) + (1 + 3 * 2) * module.forward_flops(4, 6)
    assert iteration_flops(run, experience) == expected
    experience.old_logprobs = None  # the first minibatch's forward gives log π_old: no separate pass
    assert iteration_flops(run, experience) == expected - module.forward_flops(4, 6)


def test_every_training_row_carries_tokens_per_s_and_mfu(tmp_path, make_model, tokenizer):
    from tether.config import TrainConfig
    from tether.engine.logging import read_metrics
    from tether.engine.trainer import Trainer

    model = make_model()
    examples = [{"input_ids": torch.arange(1, 9), "labels": torch.arange(1, 9)} for _ in range(8)]

    def collate(items):
        ids = torch.stack([e["input_ids"] for e in items])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def loss_fn(module, batch):
        out = module(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        # a loss metric named like the step's work must not stand in for it (nll_loss reports "tokens")
        return out.loss * batch["input_ids"].numel(), {"tokens": torch.tensor(1.0)}

    config = TrainConfig(
        output_dir=str(tmp_path), max_steps=3, batch_size=4, log_every=1, progress=False, tensorboard=False
    )
    Trainer(config, model, examples, collate, loss_fn, lambda b: float(b["input_ids"].numel())).fit()
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert len(rows) == 3
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["model_tflops"] > 0 and 0 < row["mfu"] < 10
        # tokens/s and model FLOP/s agree: 32 tokens a step, each 3 forwards of 8-token rows
        per_token = TRAINING * ModelCost.of(model).forward_flops(1, 8) / 8
        assert row["model_tflops"] * 1e12 == pytest.approx(row["tokens_per_s"] * per_token, rel=1e-9)
