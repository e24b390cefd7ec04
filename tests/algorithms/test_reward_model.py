"""The reward model's shared-prefix path: one backbone forward for every sequence of a batch, a prompt and
a ranking's repeated responses computed once, and rewards and gradients equal to the plain padded path."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tether.algorithms import reward_model as rm
from tether.algorithms.reward_model import (
    collate_pairs,
    evaluate_pairs,
    pair_rewards,
    prefix_labels,
    run_reward_model,
    tokenize_pairs,
)
from tether.config import RewardModelConfig
from tether.data.preference import PreferencePair, rankings_to_pairs
from tether.data.tokenize import TokenizedExample, pad_collate
from tether.models import save_model
from tether.models.reward import ScalarReward, reward_model_from_lm
from tether.ops.logprobs import IGNORE_INDEX

X = IGNORE_INDEX

RANKED = ["the phone is great.", "the phone is poor.", "honestly it was awful and bad.", "fine."]
PAIRS = [
    *rankings_to_pairs("review the phone.", RANKED, [1, 2, 3, 4]),  # 6 pairs, each response in 3 of them
    PreferencePair("review the lid.", "the lid is lovely and the handle is solid.", "the lid.", "t:1"),
    PreferencePair("what do you think of the kettle?", "a superb kettle.", "bad.", "t:2", margin=0.5),
]


@pytest.fixture
def reward_model(make_model, tokenizer, tmp_path):
    save_model(make_model(seed=3), tokenizer, tmp_path / "lm")
    model = reward_model_from_lm(str(tmp_path / "lm"), seed=0)
    with torch.no_grad():  # a head of unit scale, so the rewards differ visibly
        model.score.weight.copy_(
            torch.randn(model.score.weight.shape, generator=torch.Generator().manual_seed(1))
        )
    return model


def padded_rewards(module: ScalarReward, sequences: list[list[int]], pad_token_id: int) -> torch.Tensor:
    """The plain path: one right-padded row per sequence, the head on the last real token."""
    batch = pad_collate([TokenizedExample(s, s) for s in sequences], pad_token_id)
    return module(batch["input_ids"], batch["attention_mask"])


def test_prefix_labels_cut_where_a_prompts_sequences_stop_agreeing():
    sequences = [[1, 2, 3, 4, 5], [1, 2, 3, 7], [1, 2, 9, 9, 9, 9], [8, 8], [8, 8, 6]]
    labels = prefix_labels(sequences, [0, 0, 0, 1, 1])
    # Group 0 agrees on [1, 2]: cut at 2, labelled from 3 on. Group 1: [8, 8] is all of its shortest
    # sequence, so the cut keeps that sequence's last token in its branch: cut at 1.
    assert labels == [[X, X, X, 4, 5], [X, X, X, 7], [X, X, X, 9, 9, 9], [X, X], [X, X, 6]]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("pack_length", [24, 128])
def test_shared_prefix_rewards_and_gradients_equal_the_padded_path(
    reward_model, tokenizer, attention, pack_length
):
    reward_model.set_attn_implementation(attention)
    pairs = tokenize_pairs(PAIRS, tokenizer, 128)
    assert [p.prompt_id for p in pairs] == [0] * 6 + [1, 2]
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    weights = torch.linspace(-1.0, 2.0, len(sequences))

    def run(target, rewards_of):
        rewards = rewards_of(ScalarReward(target))
        grads = torch.autograd.grad((weights * rewards).sum(), list(target.parameters()))
        return rewards.detach(), grads

    batch = collate_pairs(pairs, tokenizer.pad_token_id, pack_length, share_prefix=True)
    assert batch["attention_mask"].dim() == 4
    got = run(reward_model, lambda module: torch.cat(pair_rewards(module, batch)))
    expected = run(
        copy.deepcopy(reward_model),
        lambda module: padded_rewards(module, sequences, tokenizer.pad_token_id),
    )
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    assert expected[0].std() > 0.1  # distinct rewards, not a constant
    for g, e in zip(got[1], expected[1]):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)

    # What the layout holds: each prompt's common prefix once, then each distinct response once.
    def computed_once(group: list[list[int]]) -> int:
        distinct = {tuple(s) for s in group}
        shared = min(rm.common_prefix_length(list(distinct)), min(map(len, distinct)) - 1)
        return shared + sum(len(s) - shared for s in distinct)

    ranking = [s for p in pairs[:6] for s in (p.chosen, p.rejected)]
    assert len({tuple(s) for s in ranking}) == 4  # 12 sequences, 4 distinct responses
    needed = computed_once(ranking) + computed_once(sequences[6::8]) + computed_once(sequences[7::8])
    real = batch["position_ids"].numel() - int(batch["input_ids"].eq(tokenizer.pad_token_id).sum())
    if pack_length == 128:  # one block per prompt, no prefix repeated
        assert real == needed
    assert real < sum(map(len, sequences)) / 2  # under half the tokens of one row per sequence


def test_packed_rows_without_4d_masks_equal_the_padded_path(reward_model, tokenizer):
    pairs = tokenize_pairs(PAIRS, tokenizer, 128)
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    batch = collate_pairs(pairs, tokenizer.pad_token_id, 64, share_prefix=False)  # position-id packing
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] < len(sequences)
    module = ScalarReward(reward_model).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            torch.cat(pair_rewards(module, batch)),
            padded_rewards(module, sequences, tokenizer.pad_token_id),
            atol=1e-5,
            rtol=1e-5,
        )


def test_pairwise_preference_inputs_share_their_prompt(reward_model, tokenizer):
    pairs = tokenize_pairs(PAIRS[:3], tokenizer, 256, pairwise=True)
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    batch = collate_pairs(pairs, tokenizer.pad_token_id, 512, share_prefix=True)
    module = ScalarReward(reward_model).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            torch.cat(pair_rewards(module, batch)),
            padded_rewards(module, sequences, tokenizer.pad_token_id),
            atol=1e-5,
            rtol=1e-5,
        )
    # The judge template and the prompt, up to the first response, are computed once for all 6 inputs.
    shared = rm.common_prefix_length(sequences)
    assert shared > 20
    assert batch["input_ids"].shape == (1, shared + sum(len(s) - shared for s in sequences))


def test_held_out_evaluation_equals_the_padded_path_in_the_given_order(reward_model, tokenizer):
    pairs = tokenize_pairs(PAIRS, tokenizer, 128)
    pairs = pairs[6:] + pairs[:6]  # prompts not in order: the evaluation visits them prompt by prompt
    module = ScalarReward(reward_model)
    shared = evaluate_pairs(module, pairs, tokenizer.pad_token_id, batch_size=3)
    plain = evaluate_pairs(module, pairs, tokenizer.pad_token_id, batch_size=3, pack_length=0)
    with torch.no_grad():
        rewards = padded_rewards(module, [p.chosen for p in pairs], tokenizer.pad_token_id)
    assert shared["pairs"] == 8
    assert shared["chosen_mean"] == pytest.approx(float(rewards.mean()), abs=1e-5)
    for key in ("accuracy", "bt_nll", "ece", "chosen_mean", "rejected_mean", "rejected_std"):
        assert shared[key] == pytest.approx(plain[key], abs=1e-5)
    assert [row["pairs"] for row in shared["calibration"]] == [row["pairs"] for row in plain["calibration"]]


def test_stage_evaluates_once_and_saves_a_plain_sequence_classifier(
    make_model, tokenizer, tmp_path, monkeypatch
):
    save_model(make_model(seed=0), tokenizer, tmp_path / "lm")
    rows = [
        {"prompt": f"review the {p}.", "completions": [f"the {p} is great.", f"the {p} is poor.", "bad."],
         "ranks": [1, 2, 3]}
        for p in ("phone", "lid", "kettle", "novel", "game", "hotel", "movie", "jacket")
    ] * 2  # fmt: skip
    data = tmp_path / "rankings.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = []
    original = rm.held_out_rewards
    monkeypatch.setattr(rm, "held_out_rewards", lambda *a, **k: calls.append(1) or original(*a, **k))
    out = tmp_path / "rm"
    metrics = run_reward_model(
        RewardModelConfig(
            model=str(tmp_path / "lm"), data=str(data), output_dir=str(out), eval_fraction=0.25,
            max_steps=4, batch_size=6, group_by_prompt=True, progress=False, tensorboard=False,
        )
    )  # fmt: skip
    assert len(calls) == 1  # the final evaluation, once: its rewards give eval/ metrics and eval.json
    assert metrics["pairs"] == 4 * 3
    assert json.loads((out / "eval.json").read_text()) == json.loads(json.dumps(metrics))
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final = next(row for row in reversed(logged) if "eval/loss" in row)
    assert final["eval/rewards/accuracies"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert final["eval/rewards/chosen"] == pytest.approx(metrics["chosen_mean"], abs=1e-5)
    assert final["eval/loss"] == pytest.approx(metrics["bt_nll"], abs=1e-5)  # no margins, equal weights

    # A plain transformers classifier reads the saved folder, and scores a sequence as tether does.
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    ids = tokenize_pairs([PAIRS[0]], tokenizer, 128)[0].chosen
    with torch.no_grad():
        expected = plain(input_ids=torch.tensor([ids])).logits[0, 0]
        got = padded_rewards(ScalarReward(plain), [ids], tokenizer.pad_token_id)[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
