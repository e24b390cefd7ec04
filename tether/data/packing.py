"""Padding-free batching: several sequences share a row, so no compute is spent on padding.

Sequences are placed into rows of at most ``capacity`` tokens, longest first, each into the first row with
room (first-fit decreasing). Position ids restart at 0 for each sequence; with no attention mask,
transformers builds a block-diagonal causal mask from them, so a token attends only to earlier tokens of
its own sequence. ``segment`` records which sequence each position belongs to (−1 for the few padding
tokens that fill the end of a row), so per-sequence sums are one ``scatter_add``.

Every sequence must begin with a token that carries no loss (a prompt token): the last token of one
sequence would otherwise "predict" the first token of the next.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tether.data.tokenize import TokenizedExample
from tether.ops.logprobs import IGNORE_INDEX


def pack_examples(
    examples: Sequence[TokenizedExample], pad_token_id: int, capacity: int = 0
) -> dict[str, torch.Tensor]:
    """Packed rows of ``examples``: input_ids, labels, position_ids, segment — each (R, L).

    ``capacity`` 0 (or less than the longest example) means rows as long as the longest example.
    """
    capacity = max(capacity, max(len(e) for e in examples))
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]))
    rows: list[list[int]] = []
    room: list[int] = []
    for index in order:
        need = len(examples[index])
        slot = next((r for r, free in enumerate(room) if free >= need), None)
        if slot is None:
            rows.append([])
            room.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(index)
        room[slot] -= need
    length = max(capacity - free for free in room)
    shape = (len(rows), length)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segment = torch.full(shape, -1, dtype=torch.long)
    for r, members in enumerate(rows):
        cursor = 0
        for index in members:
            example = examples[index]
            span = slice(cursor, cursor + len(example))
            input_ids[r, span] = torch.tensor(example.input_ids)
            labels[r, span] = torch.tensor(example.labels)
            position_ids[r, span] = torch.arange(len(example))
            segment[r, span] = index
            cursor += len(example)
        position_ids[r, cursor:] = torch.arange(length - cursor)  # padding: a sequence of its own
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "segment": segment}


def sequence_sums(per_token: torch.Tensor, mask: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """Σ over each sequence's masked positions: (R, L) values, mask and segment ids → (n,)."""
    keep = mask & (segment >= 0)
    sums = torch.zeros(n, dtype=per_token.dtype, device=per_token.device)
    return sums.scatter_add(0, segment[keep], per_token[keep])
