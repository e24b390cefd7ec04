"""Shared-prefix layouts: the layout holds each prompt and each distinct response once, and every
log-prob and gradient equals the plain one-row-per-sequence forward's (SDPA and eager attention)."""

import copy

import pytest
import torch

from tether.algorithms.dpo import tokenize_pair
from tether.algorithms.offline import sequence_batch, sequence_logps
from tether.data.packing import share_prefixes, unshare
from tether.data.preference import PreferencePair
from tether.data.tokenize import TokenizedExample
from tether.models import TokenLogProbs

X = -100


def example(prompt: list[int], response: list[int]) -> TokenizedExample:
    return TokenizedExample(prompt + response, [X] * len(prompt) + response)


def test_layout_by_hand():
    a, b = [11, 12, 13, 14, 15], [21, 22, 23]
    sequences = [
        example(a, [31, 32, 33]),
        example(a, [41, 42, 43, 44]),
        example(a, [31, 32, 33]),  # the first one again
        example(b, [51, 52]),
    ]
    layout = share_prefixes([s.input_ids for s in sequences], [s.labels for s in sequences], 0, 32)
    # One row: prefix a[:4] (4) + branch [15, 31, 32, 33] (4) + branch [15, 41..44] (5) + b[:2] (2) +
    # branch [23, 51, 52] (3) = 18 tokens, against 8 + 9 + 8 + 5 = 30 unshared.
    assert layout["input_ids"].shape == (1, 18)
    assert layout["input_ids"][0].tolist() == [
        11,
        12,
        13,
        14,
        15,
        31,
        32,
        33,
        15,
        41,
        42,
        43,
        44,
        21,
        22,
        23,
        51,
        52,
    ]
    assert layout["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4]
    # A branch's first token is never a target; response tokens keep their labels.
    assert layout["labels"][0].tolist() == [X] * 5 + [31, 32, 33, X, 41, 42, 43, 44, X, X, X, 51, 52]
    index = layout["index"]
    assert index[0].tolist() == [18] * 4 + [4, 5, 6, 7, 18]  # prefix and past-the-end → the 0 slot
    assert index[2].tolist() == index[0].tolist()  # a repeated sequence is read from the same branch
    assert index[1, 4:].tolist() == [8, 9, 10, 11, 12]
    mask = layout["attention_mask"][0, 0]
    # The second branch's first token sees the prefix and itself, not the first branch.
    assert mask[8].nonzero().flatten().tolist() == [0, 1, 2, 3, 8]
    # The second prompt's tokens see nothing of the first group.
    assert mask[16].nonzero().flatten().tolist() == [13, 14, 15, 16]
    values = torch.arange(18.0).reshape(1, 18)
    assert unshare(values, index)[1].tolist() == [0, 0, 0, 0, 8, 9, 10, 11, 12]


def test_a_long_group_is_split_into_blocks_of_capacity():
    prompt = list(range(10, 20))
    sequences = [example(prompt, [100 + i, 200 + i, 300 + i]) for i in range(5)]
    layout = share_prefixes([s.input_ids for s in sequences], [s.labels for s in sequences], 0, 20)
    # A block is the 9-token prefix plus as many 4-token branches as fit in 20: 2, 2, 1 → 3 rows.
    assert layout["input_ids"].shape == (3, 17)
    assert (layout["input_ids"][:, :9] == torch.tensor(prompt[:9])).all()
    tight = share_prefixes([s.input_ids for s in sequences], [s.labels for s in sequences], 0, 5)
    assert tight["input_ids"].shape == (3, 17)  # even below capacity, two responses share a prompt
    whole = share_prefixes([s.input_ids for s in sequences], [s.labels for s in sequences], 0, 0)
    assert whole["input_ids"].shape == (1, 9 + 5 * 4)  # capacity 0: the prefix once, however long


PAIRS = [
    PreferencePair("review the phone.", "the phone is great.", "the phone is poor.", "t:1"),
    PreferencePair("review the phone.", "the phone is great.", "honestly it was awful.", "t:2"),
    PreferencePair("review the lid.", "the lid is lovely.", "honestly the lid was awful.", "t:3"),
]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("capacity", [24, 256])
def test_logps_and_gradients_equal_the_plain_forward(make_model, tokenizer, attention, capacity):
    model = make_model()
    model.set_attn_implementation(attention)
    tokenized = [tokenize_pair(tokenizer, p, 128) for p in PAIRS]
    sequences = [t.chosen for t in tokenized] + [t.rejected for t in tokenized]  # chosen 1 = chosen 2
    weights = torch.linspace(-1.0, 2.0, len(sequences))

    def run(batch, target):
        logps, lengths = sequence_logps(TokenLogProbs(target), batch, len(sequences))
        grads = torch.autograd.grad((weights * logps).sum(), list(target.parameters()))
        return logps.detach(), lengths, grads

    shared = sequence_batch(sequences, tokenizer.pad_token_id, capacity, share_prefix=True)
    assert "index" in shared
    plain = sequence_batch(sequences, tokenizer.pad_token_id, 0)  # one padded row per sequence
    got, expected = run(shared, model), run(plain, copy.deepcopy(model))
    assert shared["input_ids"].ne(tokenizer.pad_token_id).sum() < plain["attention_mask"].sum()
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    assert got[1].tolist() == expected[1].tolist()
    for g, e in zip(got[2], expected[2]):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def test_a_labelled_first_token_is_not_predicted_by_the_previous_block():
    sequences = [example([7, 8], [9]), example([], [61, 62])]  # the second is labelled from its first token
    layout = share_prefixes([s.input_ids for s in sequences], [s.labels for s in sequences], 0, 16)
    assert layout["input_ids"][0].tolist() == [7, 8, 9, 61, 62]
    assert layout["labels"][0].tolist() == [X, X, 9, X, 62]  # 61 has no predecessor in its sequence
