"""The Nash-MD opponent: token-by-token sampling from π^{1−β}·π_ref^β during the policy's generate."""

from __future__ import annotations

import torch

from tether.data.templates import render_prompt
from tether.losses.nash import geometric_mixture_logits
from tether.models.lora import apply_lora
from tether.rollout.experience import sample
from tether.rollout.mixture import GeometricMixtureProcessor


def left_padded(tokenizer, prompts):
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    batch = tokenizer([render_prompt(tokenizer, p) for p in prompts], return_tensors="pt", padding=True)
    tokenizer.padding_side = side
    return batch


def next_token_logits(model, ids, mask):
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]


def test_processor_mixes_the_reference_into_chosen_rows_step_after_step(make_model, tokenizer):
    policy, reference = make_model(seed=0), make_model(seed=1)
    batch = left_padded(tokenizer, ["review the phone.", "what do you think of the hotel?", "review it."])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rows = torch.tensor([False, True, True])
    processor = GeometricMixtureProcessor(reference, 0.3, rows, mask)
    for step in range(3):  # the prompt, then one appended token at a time (the processor's KV cache)
        scores = next_token_logits(policy, ids, mask)
        mixed = processor(ids, scores)
        expected = geometric_mixture_logits(scores, next_token_logits(reference, ids, mask), 0.3)
        assert torch.equal(mixed[0], scores[0])  # the player's row is untouched
        assert torch.allclose(mixed[1:], expected[1:], atol=1e-5), step
        token = torch.tensor([[5 + step], [7], [9 + step]])
        ids, mask = torch.cat([ids, token], 1), torch.cat([mask, torch.ones_like(token)], 1)


def test_with_lora_the_reference_is_the_policy_with_adapters_off(make_model, tokenizer):
    base = make_model(seed=0)
    base_logits_model = make_model(seed=0)
    policy = apply_lora(base, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # move the adapters off zero so policy and reference differ
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    batch = left_padded(tokenizer, ["review the phone.", "review the kettle please."])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    scores = next_token_logits(policy, ids, mask)
    processor = GeometricMixtureProcessor(policy, 1.0, torch.tensor([True, True]), mask, adapters_off=True)
    mixed = processor(ids, scores)  # β = 1: the opponent is the reference itself
    expected = torch.log_softmax(next_token_logits(base_logits_model, ids, mask), -1)
    assert torch.allclose(mixed, expected, atol=1e-5)
    assert not torch.allclose(torch.log_softmax(scores, -1), expected, atol=1e-3)


def test_beta_one_opponent_samples_follow_the_reference(make_model, tokenizer):
    """With β = 1, opponent rows are sampled from π_ref: their one-token frequencies match π_ref, not π."""
    policy, reference = make_model(seed=0), make_model(seed=1)
    with torch.no_grad():  # a peaked reference, far from the near-uniform fresh policy
        reference.get_output_embeddings().weight.mul_(20)
    prompts = ["review the phone."] * 400
    batch = left_padded(tokenizer, prompts[:1])
    exact_ref = torch.softmax(next_token_logits(reference, batch["input_ids"], batch["attention_mask"]), -1)[
        0
    ]
    exact_pol = torch.softmax(next_token_logits(policy, batch["input_ids"], batch["attention_mask"]), -1)[0]
    torch.manual_seed(0)

    def every_row(mask):
        return [GeometricMixtureProcessor(reference, 1.0, torch.ones(mask.shape[0], dtype=torch.bool), mask)]

    experience = sample(policy, tokenizer, prompts, 1, max_new_tokens=1, logits_processors=every_row)
    first = experience.sequences[:, -1]
    # E_{y~π_ref}[log π_ref(y) − log π(y)] = KL(π_ref ‖ π) > 0, while samples of π would average −KL(π ‖ π_ref) < 0
    log_ratio = (exact_ref.log() - exact_pol.log())[first].mean()
    kl_ref_pol = float((exact_ref * (exact_ref.log() - exact_pol.log())).sum())
    assert kl_ref_pol > 0.1
    assert abs(float(log_ratio) - kl_ref_pol) < 0.25 * kl_ref_pol
