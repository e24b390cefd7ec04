"""The vLLM backend's plumbing, with a stand-in ``vllm`` module (vLLM itself needs a CUDA GPU)."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch

from tether.algorithms.policy_gradient import run_policy_gradient
from tether.config import PGConfig, load_config
from tether.models import load_causal_lm, save_model
from tether.rollout.experience import sample
from tether.rollout.generate import stop_token_ids
from tether.rollout.vllm_backend import VLLMBackend


@dataclass
class Completion:
    token_ids: list[int]
    finish_reason: str
    logprobs: list | None = None  # per position: {token id: Logprob} as vLLM reports them, or floats


@dataclass
class Logprob:
    logprob: float


@dataclass
class Output:
    outputs: list[Completion]


@dataclass
class FakeEngineModel:
    loads: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def load_weights(self, weights):
        self.loads.append({name: tensor.clone() for name, tensor in weights})


class FakeLLM:
    """Answers each prompt with a scripted response: stopped ones without the stop id, as vLLM reports them."""

    script: ClassVar[list[tuple[list[int], str]]] = []
    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        self.engine_model = FakeEngineModel()
        worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=self.engine_model))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=worker))
        FakeLLM.instances.append(self)

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append((prompts, params))
        out = []
        for i, _ in enumerate(prompts):
            ids, reason, *logprobs = FakeLLM.script[i % len(FakeLLM.script)]
            reported = logprobs[0][: params.max_tokens] if logprobs else None
            out.append(Output([Completion(ids[: params.max_tokens], reason, reported)]))
        return out


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances = []
    return module


def test_experience_from_backend_ids(fake_vllm, make_model, tokenizer):
    model = make_model()
    stops = stop_token_ids(model, tokenizer)
    words = tokenizer("the lid is great", add_special_tokens=False)["input_ids"][:4]
    FakeLLM.script = [(words, "stop"), (words + words, "length"), ([*words[:2], stops[0]], "stop")]
    backend = VLLMBackend("unused-folder")
    experience = sample(
        model, tokenizer, ["review the lid.", "review it."], 3, max_new_tokens=6, backend=backend
    )
    prompts, params = FakeLLM.instances[0].calls[0]
    assert params.max_tokens == 6 and params.stop_token_ids == stops and len(prompts) == 6
    # Prompt ids sent unpadded; the assembled batch has them left-padded.
    padded = experience.sequences[:, : experience.prompt_length]
    for sent, row, mask in zip(prompts, padded, experience.attention_mask[:, : experience.prompt_length]):
        assert row[mask.bool()].tolist() == sent["prompt_token_ids"]
    assert experience.finished.tolist() == [True, False, True] * 2
    assert experience.response_mask.sum(-1).tolist() == [len(words) + 1, 6, 3] * 2  # the stop id counted
    assert experience.completions[0] == tokenizer.decode(words, skip_special_tokens=True).strip()
    response = experience.sequences[:, experience.prompt_length :]
    assert response[0, len(words)].item() in stops  # the stop id vLLM leaves out is put back


def test_online_loop_syncs_weights_into_the_engine_after_each_step(
    fake_vllm, make_model, tokenizer, tmp_path
):
    save_model(make_model(), tokenizer, tmp_path / "tiny")
    words = tokenizer("the lid is great", add_special_tokens=False)["input_ids"]
    FakeLLM.script = [(words, "stop"), (words[:2], "stop")]
    out = tmp_path / "grpo"
    config = load_config(
        PGConfig,
        None,
        [f"model={tmp_path / 'tiny'}", "reward=gym:reviews", f"output_dir={out}", "max_steps=2",
         "batch_size=2", "group_size=2", "max_new_tokens=6", "progress=false", "tensorboard=false",
         "rollout_backend=vllm", "learning_rate=0.01"],
    )  # fmt: skip
    run_policy_gradient(config)
    llm = FakeLLM.instances[0]
    assert llm.kwargs["model"] == str(tmp_path / "tiny")
    assert len(llm.calls) == 2 and len(llm.engine_model.loads) == 2  # sampled twice, synced after each update
    final = load_causal_lm(str(out)).state_dict()
    last = llm.engine_model.loads[-1]
    for name, tensor in final.items():
        torch.testing.assert_close(last[name], tensor)
    first = llm.engine_model.loads[0]
    assert any(not torch.equal(first[n], last[n]) for n in final)  # the second step changed the weights


def test_the_engines_logprobs_reach_the_experience_and_correct_the_loss(
    fake_vllm, make_model, tokenizer, tmp_path
):
    model = make_model()
    words = tokenizer("the lid is great", add_special_tokens=False)["input_ids"][:4]
    FakeLLM.script = [
        (words, "stop", [{w: Logprob(-0.5)} for w in words]),  # the stop id left out: no log-prob for it
        (words + words, "length", [-1.0] * 8),
    ]
    backend = VLLMBackend("unused-folder")
    experience = sample(model, tokenizer, ["review the lid."], 2, max_new_tokens=6, backend=backend)
    assert FakeLLM.instances[0].calls[0][1].logprobs == 0  # the sampled token's own log-prob is asked for
    rollout = experience.rollout_logprobs
    assert rollout[0, :4].tolist() == [-0.5] * 4 and torch.isnan(rollout[0, 4])  # NaN: the trainer's stands
    assert rollout[1].tolist() == [-1.0] * 6
    # End to end: truncated importance weights in the loss, with the mismatch logged.
    save_model(model, tokenizer, tmp_path / "tiny")
    out = tmp_path / "grpo"
    config = PGConfig(
        model=str(tmp_path / "tiny"), reward="gym:reviews", output_dir=str(out), max_steps=1, batch_size=1,
        group_size=2, max_new_tokens=6, progress=False, tensorboard=False, rollout_backend="vllm",
        tis_cap=2.0,
    )  # fmt: skip
    run_policy_gradient(config)
    row = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert 0.0 < row["mismatch/weight_mean"] <= 2.0 and row["mismatch/log_ratio_abs"] > 0.0
