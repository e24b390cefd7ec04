"""Machinery shared by the offline preference stages (DPO family, KTO): splitting records, summed
response log-probs of many sequences in one padding-free forward, and reference log-probs computed once
and cached on each item (``cache_reference_logprobs``).

With a frozen reference equal to the starting policy, no second model is loaded at all: the reference
log-probs are computed by the policy itself before its first update (with LoRA: adapters disabled).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from tether.data.packing import pack_examples, sequence_sums, share_prefixes, unshare
from tether.data.readers import Record
from tether.data.tokenize import TokenizedExample, pad_collate
from tether.models.forward import TokenLogProbs, shares_prefixes
from tether.models.lora import is_peft_model
from tether.ops.logprobs import IGNORE_INDEX, shift_labels


def split_records(
    records: list[Record], eval_fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """(train, held-out) records, the held-out part drawn at random with ``seed``."""
    shuffled = records[:]
    random.Random(seed).shuffle(shuffled)
    n_eval = round(eval_fraction * len(shuffled))
    return shuffled[n_eval:], shuffled[:n_eval]


def sequence_batch(
    examples: Sequence[TokenizedExample], pad_token_id: int, pack_length: int, share_prefix: bool = False
) -> dict[str, torch.Tensor]:
    """Tensors for :func:`sequence_logps`: with ``pack_length`` > 0, packed rows in which sequences that
    share a prompt compute it once (``share_prefix``, see ``data.packing.share_prefixes``; pass
    ``models.forward.shares_prefixes(model)``) or plain packed rows (for attention that takes no 4-D
    mask); with 0, one padded row per sequence."""
    if pack_length > 0 and share_prefix:
        return share_prefixes(
            [e.input_ids for e in examples], [e.labels for e in examples], pad_token_id, pack_length
        )
    if pack_length > 0:
        return pack_examples(examples, pad_token_id, pack_length)
    batch = pad_collate(examples, pad_token_id)
    rows = torch.arange(len(examples))[:, None].expand_as(batch["input_ids"])
    segment = torch.where(batch["attention_mask"].bool(), rows, torch.full_like(rows, -1))
    return {**batch, "segment": segment}


def sequence_logps(
    module: TokenLogProbs, batch: dict[str, torch.Tensor], n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs log π(y|x) (n,) and response lengths (n,) of the n sequences in ``batch``."""
    if "index" in batch:  # a shared-prefix layout
        logprobs = module(
            batch["input_ids"], batch["attention_mask"], batch["labels"], position_ids=batch["position_ids"]
        )  # (R, L)
        mask = shift_labels(batch["labels"]) != IGNORE_INDEX  # (R, L)
        per_sequence = unshare(logprobs, batch["index"])  # (n, T)
        return per_sequence.sum(-1), unshare(mask.float(), batch["index"]).sum(-1)
    packed = "position_ids" in batch
    logprobs = module(
        batch["input_ids"],
        None if packed else batch["attention_mask"],
        batch["labels"],
        position_ids=batch.get("position_ids"),
    )  # (R, L)
    mask = shift_labels(batch["labels"]) != IGNORE_INDEX  # (R, L)
    return sequence_sums(logprobs, mask, batch["segment"], n), sequence_sums(
        mask.float(), mask, batch["segment"], n
    )


@contextlib.contextmanager
def reference_of(model: Any, ref_model: Any | None) -> Iterator[Any]:
    """The frozen reference: ``ref_model`` if given, the LoRA model with adapters disabled, or ``model``
    itself (call this before the first update, when the policy still equals the reference)."""
    if ref_model is not None:
        yield ref_model
    elif is_peft_model(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


@torch.no_grad()
def reference_logps(
    reference: Any,
    examples: Sequence[TokenizedExample],
    pad_token_id: int,
    pack_length: int,
    batch_size: int = 64,
) -> list[float]:
    """log π_ref(y|x) of every example, computed once (cached for the whole run). Examples are visited
    in sorted token order, so those sharing a prompt (or repeated outright) share a batch and, with a
    shared-prefix layout, are computed once."""
    module = TokenLogProbs(reference)
    was_training = reference.training
    reference.eval()
    order = sorted(range(len(examples)), key=lambda i: examples[i].input_ids)
    values = [0.0] * len(examples)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = sequence_batch(
            [examples[i] for i in chunk], pad_token_id, pack_length, shares_prefixes(reference)
        )
        logprobs, _ = sequence_logps(module, batch, len(chunk))
        for i, value in zip(chunk, logprobs.tolist()):
            values[i] = value
    reference.train(was_training)
    return values


def cache_reference_logprobs(
    model: Any,
    ref_model: Any | None,
    datasets: Sequence[Sequence[Any]],
    sides: Sequence[str],
    pad_token_id: int,
    pack_length: int,
    batch_size: int = 64,
) -> None:
    """Store log π_ref(y|x) of every item's sequences on the item, before the first update: for each
    attribute ``side`` of ``sides`` (a ``TokenizedExample``: ``chosen``/``rejected`` in DPO,
    ``example``/``mismatched`` in KTO) its value goes to ``ref_<side>``. The reference is
    :func:`reference_of` (``model``, ``ref_model``); each of ``datasets`` (train, held-out) is one pass of
    :func:`reference_logps`, all sides together."""
    with reference_of(model, ref_model) as reference:
        for items in datasets:
            sequences = [getattr(item, side) for side in sides for item in items]
            logprobs = reference_logps(reference, sequences, pad_token_id, pack_length, batch_size)
            for k, side in enumerate(sides):
                for item, value in zip(items, logprobs[k * len(items) : (k + 1) * len(items)]):
                    setattr(item, f"ref_{side}", value)
