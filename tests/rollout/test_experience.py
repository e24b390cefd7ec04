import math

import pytest
import torch

from tether.algorithms.online_batch import forward
from tether.models import apply_lora
from tether.models.forward import token_logprobs
from tether.models.value import PolicyValue
from tether.ops.logprobs import IGNORE_INDEX
from tether.rollout.experience import sample
from tether.rollout.rewards import AdaptiveKLController, shaped_rewards

PROMPTS = ["review the phone.", "write a review of the kettle in detail please."]  # different prompt lengths


@pytest.fixture
def experience(make_model, tokenizer):
    torch.manual_seed(0)
    model = make_model()
    return model, sample(model, tokenizer, PROMPTS, group_size=3, max_new_tokens=12, temperature=1.0)


def test_sample_shapes_masks_and_stop(experience, tokenizer):
    _, exp = experience
    n, a = exp.response_mask.shape
    assert n == 6 and exp.prompts == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    assert exp.sequences.shape[1] == exp.prompt_length + a
    responses = exp.sequences[:, exp.prompt_length :]
    stops = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
    for row in range(n):
        length = int(exp.response_mask[row].sum())
        assert (
            exp.response_mask[row, :length].all() and not exp.response_mask[row, length:].any()
        )  # left-aligned
        stopped = length > 0 and int(responses[row, length - 1]) in stops
        assert bool(exp.finished[row]) == stopped  # an unfinished response is marked
        assert not any(int(t) in stops for t in responses[row, : length - 1])  # nothing after the first stop


def test_logprobs_under_left_padding_equal_each_sequence_alone(experience):
    model, exp = experience
    module = PolicyValue(model, "head")
    out = forward(module, exp, temperature=0.7)
    for row in range(exp.sequences.shape[0]):
        keep = exp.attention_mask[row].bool()
        ids = exp.sequences[row][keep][None]
        labels = exp.labels()[row][keep][None]
        alone = token_logprobs(model, ids, torch.ones_like(ids), labels, temperature=0.7)[0]
        length = int(exp.response_mask[row].sum())
        prompt_real = int(exp.attention_mask[row, : exp.prompt_length].sum())
        expected = alone[prompt_real - 1 : prompt_real - 1 + length]
        torch.testing.assert_close(out["logprobs"][row, :length], expected, atol=1e-5, rtol=1e-5)
        assert (out["logprobs"][row, length:] == 0).all()
    assert (out["values"] == 0).all()  # the value head starts at zero
    assert (out["entropy"][exp.response_mask.bool()] > 0).all()


@pytest.mark.parametrize("value_mode", ["head", "model"])
def test_shared_prompt_layout_equals_the_padded_batch(experience, value_mode):
    model, exp = experience
    module = PolicyValue(model, value_mode)
    torch.nn.init.normal_(module.value_head.weight)
    layout = exp.shared_layout(capacity=4 * exp.sequences.shape[1])
    assert layout["input_ids"].numel() < exp.attention_mask.sum()  # a group's prompt is computed once
    mask = exp.response_mask.bool()

    def outputs_and_grads(out):
        total = out["logprobs"][mask].sum() + out["entropy"][mask].sum() + out["values"][mask].sum()
        return out, torch.autograd.grad(total, [p for p in module.parameters() if p.requires_grad])

    shared, shared_grads = outputs_and_grads(forward(module, exp, temperature=0.7))
    padded = module(exp.sequences, exp.attention_mask, exp.labels(), exp.position_ids(), 0.7)
    padded, padded_grads = outputs_and_grads({k: exp.response_columns(v) for k, v in padded.items()})
    for key in ("logprobs", "entropy", "values"):
        torch.testing.assert_close(shared[key][mask], padded[key][mask], atol=1e-5, rtol=1e-5)
    for got, expected in zip(shared_grads, padded_grads):  # sums of many terms: float32 summation order
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_the_shared_layout_is_computed_once_per_batch_and_not_carried_into_minibatches(experience):
    _, exp = experience
    capacity = 2 * exp.sequences.shape[1]
    layout = exp.shared_layout(capacity)
    assert exp.shared_layout(capacity) is layout  # the policy, reference and value forwards share it
    n = exp.sequences.shape[0]
    assert exp.select(torch.arange(n)) is exp  # the whole batch in order: the batch itself, cache and all
    swapped = exp.select(torch.tensor([3, 4, 5, 0, 1, 2]))  # groups in another order: a fresh layout
    assert swapped.layouts == {}
    fresh = swapped.shared_layout(capacity)
    for key in ("input_ids", "labels", "position_ids", "attention_mask"):
        assert torch.equal(fresh[key], layout[key])  # the same blocks (rows sorted by length)…
    assert not torch.equal(fresh["index"], layout["index"])  # …read back into the swapped rows
    assert torch.equal(fresh["index"], layout["index"][[3, 4, 5, 0, 1, 2]])


def test_sampling_is_not_truncated_to_the_top_k(make_model, tokenizer):
    # A fresh tiny model is close to uniform over its 400 tokens: 300 one-token samples hit far more
    # than the 50 distinct tokens that transformers' default top_k=50 would allow.
    torch.manual_seed(0)
    exp = sample(make_model(), tokenizer, ["review the phone."], group_size=300, max_new_tokens=1)
    assert len(set(exp.sequences[:, -1].tolist())) > 100


def test_the_generate_fallback_ignores_the_checkpoints_sampling_settings(make_model, tokenizer):
    # A LoRA policy samples with transformers' generate; a checkpoint's top_k=5 must not truncate it.
    model = apply_lora(make_model(), r=2, alpha=4)
    model.generation_config.top_k = 5
    model.generation_config.repetition_penalty = 3.0
    torch.manual_seed(0)
    exp = sample(model, tokenizer, ["review the phone."], group_size=300, max_new_tokens=1)
    assert len(set(exp.sequences[:, -1].tolist())) > 100


def test_shaped_rewards_hand_worked():
    scores = torch.tensor([1.0, 2.0])
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -3.0], [-1.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, kl = shaped_rewards(scores, logprobs, ref, mask, kl_coef=0.1, estimator="k1")
    # k1 = log π − log π_ref: row 0 (0.5, −1, 0); row 1 (0.5, 0, masked). r = −0.1·k1, + score at the last token.
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 1.0], [-0.05, 2.0, 0.0]]))
    torch.testing.assert_close(kl.sum(-1), torch.tensor([-0.5, 0.5]))
    _, kl3 = shaped_rewards(scores, logprobs, ref, mask, kl_coef=0.1, estimator="k3")
    # k3 = e^{−ℓ} − 1 + ℓ at ℓ = 0.5 and −1.
    assert abs(float(kl3[0, 0]) - (math.exp(-0.5) - 1 + 0.5)) < 1e-6
    assert abs(float(kl3[0, 1]) - (math.exp(1.0) - 1 - 1.0)) < 1e-6


def test_adaptive_kl_controller_hand_worked():
    fixed = AdaptiveKLController(0.1)
    assert fixed.update(100.0, 32) == 0.1
    control = AdaptiveKLController(0.1, target=6.0, horizon=100)
    # KL 12 overshoots: error clipped to +0.2 → β·(1 + 0.2·32/100).
    assert control.update(12.0, 32) == pytest.approx(0.1 * (1 + 0.2 * 0.32))
    # KL 4.5: error 4.5/6 − 1 = −0.25, clipped to −0.2.
    before = control.value
    assert control.update(4.5, 100) == pytest.approx(before * (1 - 0.2))
    # The example: KL at 10× the target for 60 steps of 32 samples. The old rule's extra gain of
    # 0.1 moved β from 0.2 to 0.2008; Ziegler et al.'s code rule (horizon 10 000) gives 0.2078.
    # With horizon 320 (tether's default) the per-step gain is the paper's K_β = 0.1: 0.2·1.02^60 = 0.6562.
    for horizon, expected in ((10_000, 0.20783), (320, 0.65621)):
        control = AdaptiveKLController(0.2, target=1.0, horizon=horizon)
        for _ in range(60):
            control.update(10.0, 32)
        assert control.value == pytest.approx(expected, abs=1e-5)


def test_adaptive_kl_controller_holds_a_toy_policy_at_its_target():
    # Closed loop: a softmax policy over 6 answers ascends E[r] − β·KL(π ‖ π_ref) exactly; after each
    # iteration of 32 samples the controller adapts β from the KL it measured. It settles near the target.
    generator = torch.Generator().manual_seed(0)
    reward = torch.randn(6, generator=generator) * 2
    ref_logits = torch.randn(6, generator=generator)
    logits = ref_logits.clone().requires_grad_()
    control = AdaptiveKLController(0.05, target=0.5, horizon=320)
    measured = []
    for _ in range(300):
        for _ in range(5):
            logp = torch.log_softmax(logits, -1)
            kl = (logp.exp() * (logp - torch.log_softmax(ref_logits, -1))).sum()
            objective = (logp.exp() * reward).sum() - control.value * kl
            (grad,) = torch.autograd.grad(objective, logits)
            logits = (logits + 0.5 * grad).detach().requires_grad_()
        measured.append(float(kl.detach()))
        control.update(measured[-1], 32)
    settled = sum(measured[-50:]) / 50
    assert 0.35 <= settled <= 0.65, settled  # within ±30 % of the target
    assert max(measured) > 1.4 and control.value > 40 * 0.05  # β had to grow 40-fold to get there


def test_labels_cover_only_response_tokens(experience):
    _, exp = experience
    labels = exp.labels()
    assert (labels[:, : exp.prompt_length] == IGNORE_INDEX).all()
    response_labels = labels[:, exp.prompt_length :]
    assert ((response_labels != IGNORE_INDEX) == exp.response_mask.bool()).all()
