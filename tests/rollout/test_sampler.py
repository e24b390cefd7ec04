"""The lean sampler against transformers: the same logits at every step, the same greedy tokens, and
samples that follow softmax(logits / T) (top-p respected)."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from tether.rollout.sampler import _draw, sample_tokens, supports

STOPS = [2, 3]


def build(kind: str):
    common = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention
        initializer_range=0.5,  # peaked distributions: greedy choices are far from ties
        pad_token_id=0,
        eos_token_id=STOPS,
    )
    torch.manual_seed(0)
    if kind == "qwen2":  # q/k/v biases
        return Qwen2ForCausalLM(Qwen2Config(**common)).eval()
    if kind == "llama-biases":  # q/k/v and o biases
        model = LlamaForCausalLM(LlamaConfig(**common, attention_bias=True)).eval()
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.bias.normal_()
        return model
    if kind == "dynamic-rope":  # rescaled once a sequence passes max_position_embeddings
        rope = {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0}
        return LlamaForCausalLM(LlamaConfig(**common, max_position_embeddings=8, rope_parameters=rope)).eval()
    if kind == "llama3-rope":
        rope = {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        }
        return LlamaForCausalLM(LlamaConfig(**common, rope_parameters=rope)).eval()
    return LlamaForCausalLM(LlamaConfig(**common)).eval()


def left_padded_prompts():
    ids = torch.tensor([[0, 0, 0, 5, 6, 7], [8, 9, 10, 11, 12, 13], [0, 14, 15, 16, 17, 18]])
    return ids, (ids != 0).long()


def generate_greedy(model, ids, mask, max_new_tokens):
    """``generate``'s greedy response tokens (after the prompt), stopping at STOPS and padding with 0."""
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=STOPS,
            pad_token_id=0,
        )
    return out[:, ids.shape[1] :]


class Recorder:
    """A logits processor that keeps every step's raw logits and changes nothing."""

    def __init__(self):
        self.seen = []

    def __call__(self, input_ids, scores):
        self.seen.append((input_ids.clone(), scores.clone()))
        return scores


@pytest.mark.parametrize("kind", ["llama", "qwen2", "llama3-rope", "llama-biases"])
def test_step_logits_and_greedy_tokens_equal_transformers(kind):
    model = build(kind)
    assert supports(model)
    ids, mask = left_padded_prompts()
    recorder = Recorder()
    ours = sample_tokens(model, ids, mask, 10, STOPS, 0, do_sample=False, logits_processors=[recorder])
    theirs = generate_greedy(model, ids, mask, 10)
    assert torch.equal(ours, theirs)
    # Every step's logits equal a plain forward over the whole sequence so far (left padding and all).
    for sequence, scores in recorder.seen:
        attention = torch.cat([mask, torch.ones(3, sequence.shape[1] - ids.shape[1], dtype=torch.long)], 1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            full = model(input_ids=sequence, attention_mask=attention, position_ids=positions).logits[:, -1]
        torch.testing.assert_close(scores, full, atol=1e-4, rtol=1e-4)
    assert len(recorder.seen) == ours.shape[1]


@pytest.mark.parametrize("seed", range(4))
def test_rows_leaving_the_batch_change_no_token(seed):
    # Without logits processors, stopped rows leave the running batch; greedy tokens stay generate's.
    model = build("llama")
    torch.manual_seed(seed)
    ids = torch.randint(4, 64, (6, 5))
    ids[:3, :2] = 0  # left padding on half the rows
    ids[4] = ids[3]  # a repeated prompt (prefilled once)
    mask = (ids != 0).long()
    ours = sample_tokens(model, ids, mask, 30, STOPS, 0, do_sample=False)
    theirs = generate_greedy(model, ids, mask, 30)
    assert torch.equal(ours, theirs)
    stopped_at = [next((i for i, t in enumerate(row) if t in STOPS), None) for row in ours.tolist()]
    assert len({s for s in stopped_at if s is not None}) >= 2  # rows left the batch at different steps


def test_samples_follow_the_tempered_distribution():
    model = build("llama")
    ids = torch.tensor([[5, 6, 7]]).repeat(4000, 1)
    temperature = 0.7
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids[:1]).logits[0, -1] / temperature, -1)
    torch.manual_seed(1)
    tokens = sample_tokens(model, ids, torch.ones_like(ids), 1, STOPS, 0, temperature=temperature)[:, 0]
    # E[log p(token)] = −H(p): the sample mean must sit within 4 standard errors of the exact value.
    drawn = logp[tokens]
    exact = float((logp.exp() * logp).sum())
    standard_error = float(drawn.std()) / math.sqrt(len(drawn))
    assert abs(float(drawn.mean()) - exact) < 4 * standard_error
    # and the empirical frequency of the likeliest token matches its probability
    top = int(logp.argmax())
    assert abs(float((tokens == top).float().mean()) - float(logp[top].exp())) < 0.03


def test_top_p_keeps_to_the_nucleus():
    model = build("llama")
    ids = torch.tensor([[5, 6, 7]]).repeat(500, 1)
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids[:1]).logits[0, -1], -1)
    ordered, order = probs.sort(descending=True)
    nucleus = set(order[: int((ordered.cumsum(0) < 0.6).sum()) + 1].tolist())  # smallest set with ≥ 0.6
    torch.manual_seed(0)
    tokens = sample_tokens(model, ids, torch.ones_like(ids), 1, STOPS, 0, top_p=0.6)[:, 0]
    assert set(tokens.tolist()) <= nucleus and len(set(tokens.tolist())) == len(nucleus) > 1


def test_rows_stop_independently_and_pad_after_their_stop():
    model = build("llama")
    ids, mask = left_padded_prompts()
    torch.manual_seed(3)
    out = sample_tokens(model, ids, mask, 40, STOPS, 0)
    assert sum(any(t in STOPS for t in row) for row in out.tolist()) >= 1
    for row in out.tolist():
        if any(t in STOPS for t in row):
            first = next(i for i, t in enumerate(row) if t in STOPS)
            assert all(t == 0 for t in row[first + 1 :])
    assert out.shape[1] <= 40
    assert not out.is_inference()  # sampled in inference mode, returned as a tensor training can use
    assert sample_tokens(model, ids, mask, 0, STOPS, 0).shape == (3, 0)  # nothing asked, nothing drawn


def test_a_repeated_prompt_is_prefilled_once_and_sampled_independently():
    model = build("llama")
    ids = torch.tensor([[0, 5, 6, 7]] * 3 + [[8, 9, 10, 11]] * 3)
    mask = (ids != 0).long()
    torch.manual_seed(0)
    out = sample_tokens(model, ids, mask, 6, STOPS, 0)
    assert len({tuple(row) for row in out[:3].tolist()}) > 1  # the copies draw their own tokens
    greedy = sample_tokens(model, ids, mask, 6, STOPS, 0, do_sample=False)
    theirs = generate_greedy(model, ids, mask, 6)
    assert torch.equal(greedy, theirs)


def test_a_token_of_probability_zero_is_never_drawn():
    scores = torch.full((4096, 8), float("-inf"))
    scores[:, 3], scores[:, 6] = 0.0, 1.0  # only tokens 3 and 6 are possible
    torch.manual_seed(0)
    drawn = _draw(scores, top_p=1.0)
    assert set(drawn.tolist()) == {3, 6}
    assert abs(float((drawn == 6).float().mean()) - math.e / (1 + math.e)) < 0.03


def test_models_with_layers_it_cannot_read_use_generate():
    from tether.models import apply_lora

    model = build("llama")
    assert supports(model)
    assert not supports(apply_lora(model, r=2, alpha=4))  # a PeftModel, and LoRA layers inside
    injected = build("llama")
    injected.model.layers[0].mlp.up_proj = torch.nn.Sequential(injected.model.layers[0].mlp.up_proj)
    assert not supports(injected)  # a projection that is not a plain Linear


def test_a_rope_that_depends_on_the_sequence_length_uses_generate():
    """Dynamic RoPE rescales its frequencies from the longest position it is given. The sampler makes
    every position's tables at once, so from the first token on it would differ from ``generate``, which
    rescales only once the sequence is that long."""
    model = build("dynamic-rope")
    assert not supports(model)
    ids, mask = left_padded_prompts()  # 6 prompt tokens + 10 new > max_position_embeddings = 8
    theirs = generate_greedy(model, ids, mask, 10)
    assert not torch.equal(sample_tokens(model, ids, mask, 10, STOPS, 0, do_sample=False), theirs)


def test_the_generate_path_does_not_warn_on_every_call():
    """Models the sampler does not cover go through ``generate`` with the plain settings; transformers must
    not warn about them on each call (it did: both min_new_tokens and min_length were set)."""
    import logging

    from transformers.utils import logging as hf_logging

    from tether.rollout.generate import sample_responses

    model = build("dynamic-rope")
    ids, mask = left_padded_prompts()
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.add_handler(handler)
    try:
        for do_sample in (True, False, True):
            out = sample_responses(model, ids, mask, 3, STOPS, 0, do_sample=do_sample)
            assert out.shape == (3, 3)
    finally:
        hf_logging.remove_handler(handler)
        hf_logging.set_verbosity(before)
    assert warnings == []
