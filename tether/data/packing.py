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


def share_prefixes(
    input_ids: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    pad_token_id: int,
    capacity: int = 0,
) -> dict[str, torch.Tensor]:
    """One forward for many sequences, each shared prompt computed once and each repeated sequence once.

    Sequence n is cut at p_n, the position that predicts its first labelled token: the prefix
    ``ids[:p_n]`` carries no loss and is shared by the sequences with the same prefix (the chosen and
    rejected response of a pair, the G samples of a group); the branch ``ids[p_n:]`` (the last prompt
    token and the response) is stored once per distinct branch.

    A block holds a prefix and as many of its branches as fit in ``capacity`` tokens, and at least two (a
    pair always shares its prompt); a prefix with more branches gets several blocks, so rows stay short,
    since attention costs the square of a row's length (``capacity`` 0: one block per prefix, however
    long). Blocks go into rows of ``capacity`` tokens, or of the longest block (first-fit decreasing).
    Branch tokens keep their positions p_n, p_n+1, … and attend causally to their own prefix and their
    own branch only (the 4-D mask), so every logit equals the unshared forward's.
    The idea is that of prefix sharing for preference tuning (Wang & Hegde 2024, "Accelerating Direct
    Preference Optimization with Prefix Sharing", arXiv:2410.20305) and of InstructGPT's one forward
    per completion of a ranking (Ouyang et al. 2022, §3.5, reward modelling).

    Returns input_ids, labels, position_ids (R, L); attention_mask (R, 1, L, L) bool, True = may attend;
    index (N, T), T the longest sequence: where token t of sequence n sits in the flattened (R·L) layout,
    R·L for prefix and past-the-end positions (whose outputs :func:`unshare` reads as 0 — no label is
    predicted there).
    """
    groups, keys = _prefix_groups(input_ids, labels)
    blocks = _blocks(groups, capacity)
    sizes = [len(prefix) + sum(len(key[0]) for key in branches) for prefix, branches in blocks]
    rows, width = _first_fit(sizes, max(capacity, *sizes))
    layout, starts = _lay_out(blocks, rows, width, pad_token_id)
    block_of, branch_of = layout.pop("block_of"), layout.pop("branch_of")
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same_block = block_of[:, :, None] == block_of[:, None, :]  # (R, L, L): query, key
    visible = (branch_of[:, None, :] == -1) | (branch_of[:, :, None] == branch_of[:, None, :])
    longest = max(len(ids) for ids in input_ids)
    index = torch.full((len(input_ids), longest), len(rows) * width, dtype=torch.long)
    for n, (prefix, key) in enumerate(keys):
        start = starts[(prefix, key)]
        index[n, len(prefix) : len(prefix) + len(key[0])] = torch.arange(start, start + len(key[0]))
    return {**layout, "attention_mask": (causal & same_block & visible)[:, None], "index": index}


def _prefix_groups(
    input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]
) -> tuple[dict[tuple[int, ...], dict[tuple, None]], list[tuple]]:
    """Each prefix's distinct branches, in order, and each sequence's (prefix, branch key)."""
    groups: dict[tuple[int, ...], dict[tuple, None]] = {}
    keys = []
    for ids, labs in zip(input_ids, labels):
        first = next((t for t, label in enumerate(labs) if label != IGNORE_INDEX), len(ids))
        cut = min(max(first - 1, 0), len(ids) - 1)
        prefix, key = tuple(ids[:cut]), (tuple(ids[cut:]), tuple(labs[cut:]))
        groups.setdefault(prefix, {})[key] = None
        keys.append((prefix, key))
    return groups, keys


def _blocks(groups: dict[tuple[int, ...], dict[tuple, None]], capacity: int) -> list[tuple[tuple, list]]:
    """Blocks (prefix, branches), each at most ``capacity`` tokens unless one branch alone is longer."""
    blocks: list[tuple[tuple[int, ...], list[tuple]]] = []
    for prefix, branches in groups.items():
        size = None  # the prefix's first branch opens a block
        for key in branches:
            full = capacity > 0 and size is not None and size + len(key[0]) > capacity
            if size is None or (full and len(blocks[-1][1]) >= 2):  # a pair's prompt is always shared
                blocks.append((prefix, []))
                size = len(prefix)
            blocks[-1][1].append(key)
            size += len(key[0])
    return blocks


def _first_fit(sizes: list[int], capacity: int) -> tuple[list[list[int]], int]:
    """Blocks into rows of ``capacity`` tokens, first-fit decreasing; the rows and the widest row's width."""
    rows: list[list[int]] = []
    room: list[int] = []
    for b in sorted(range(len(sizes)), key=lambda b: -sizes[b]):
        slot = next((r for r, free in enumerate(room) if free >= sizes[b]), None)
        if slot is None:
            rows.append([])
            room.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(b)
        room[slot] -= sizes[b]
    return rows, max(capacity - free for free in room)


def _lay_out(
    blocks: list[tuple[tuple, list]], rows: list[list[int]], width: int, pad_token_id: int
) -> tuple[dict[str, torch.Tensor], dict[tuple, int]]:
    """The (R, width) tensors of the blocks placed row by row — ids, labels, positions, and which block and
    branch each position belongs to (−1: prefix or padding) — and each branch's first flat position."""
    shape = (len(rows), width)
    ids_out = torch.full(shape, pad_token_id, dtype=torch.long)
    labels_out = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    block_of = torch.full(shape, -1, dtype=torch.long)
    branch_of = torch.full(shape, -1, dtype=torch.long)
    starts: dict[tuple, int] = {}
    for r, members in enumerate(rows):
        cursor = 0
        for b in members:
            prefix, branches = blocks[b]
            span = slice(cursor, cursor + len(prefix))
            ids_out[r, span] = torch.tensor(prefix, dtype=torch.long)
            position_ids[r, span] = torch.arange(len(prefix))
            block_of[r, span] = b
            cursor += len(prefix)
            for number, key in enumerate(branches):
                tokens, labs = key
                span = slice(cursor, cursor + len(tokens))
                ids_out[r, span] = torch.tensor(tokens, dtype=torch.long)
                labels_out[r, span] = torch.tensor(labs, dtype=torch.long)
                labels_out[r, cursor] = IGNORE_INDEX  # a branch's first token is never a target here
                position_ids[r, span] = torch.arange(len(prefix), len(prefix) + len(tokens))
                block_of[r, span], branch_of[r, span] = b, number
                starts[(prefix, key)] = r * width + cursor
                cursor += len(tokens)
        position_ids[r, cursor:] = torch.arange(width - cursor)
    layout = {"input_ids": ids_out, "labels": labels_out, "position_ids": position_ids}
    return {**layout, "block_of": block_of, "branch_of": branch_of}, starts


def unshare(per_position: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(R, L) outputs of a :func:`share_prefixes` layout → (N, T) per sequence, 0 where ``index`` points
    past the layout. A branch shared by several sequences is read by each (gradients add up)."""
    flat = torch.cat([per_position.reshape(-1), per_position.new_zeros(1)])
    return flat[index]
