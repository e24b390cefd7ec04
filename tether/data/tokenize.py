"""Tokenisation with response-only labels, packing for pre-training, and padding collation.

Labels follow the Hugging Face convention: aligned with ``input_ids`` and shifted inside the loss; −100
(``IGNORE_INDEX``) on prompt tokens and padding, so only response tokens carry loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

from tether.data.formats import SFTExample
from tether.data.templates import conversation_segments
from tether.ops.logprobs import IGNORE_INDEX


@dataclass
class TokenizedExample:
    """Token ids and labels of one example (labels −100 where no loss)."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


S = TypeVar("S")


@dataclass
class TokenizedPair(Generic[S]):
    """A preference pair's two tokenised sequences, chosen then rejected: ``TokenizedExample``s (labels
    on the response) for the policy stages, plain token ids for a reward model, which reads the whole
    sequence. ``weight`` rescales its loss (a ranking's pairs weigh 1/#pairs); ``margin`` is the
    Bradley–Terry margin when the record gives one; ``prompt_id`` is equal for pairs of the same prompt;
    ``ref_chosen``/``ref_rejected`` hold log π_ref once cached (``algorithms/offline.py``)."""

    chosen: S
    rejected: S
    weight: float = 1.0
    margin: float | None = None
    prompt_id: int = 0
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0


def tokenize_segments(tokenizer: Any, segments: Sequence[tuple[str, bool]]) -> TokenizedExample:
    """Tokenise each piece on its own (no special tokens added) and concatenate, so the label boundary
    falls exactly between prompt and response — the prompt is tokenised as it will be at generation."""
    input_ids: list[int] = []
    labels: list[int] = []
    for text, is_trained in segments:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids.extend(ids)
        labels.extend(ids if is_trained else [IGNORE_INDEX] * len(ids))
    return TokenizedExample(input_ids, labels)


def tokenize_sft(tokenizer: Any, example: SFTExample, max_length: int) -> TokenizedExample | None:
    """Token ids and response-only labels; None when truncation to ``max_length`` leaves no response token.

    Plain-text examples get EOS appended to their last (trained) piece so the model learns to stop.
    """
    if example.messages is not None:
        segments = conversation_segments(
            tokenizer, list(example.messages), list(example.trained), example.where
        )
    else:
        segments = list(example.segments)
        if tokenizer.eos_token:
            text, is_trained = segments[-1]
            segments[-1] = (text + tokenizer.eos_token, is_trained)
    tokenized = tokenize_segments(tokenizer, segments)
    tokenized = TokenizedExample(tokenized.input_ids[:max_length], tokenized.labels[:max_length])
    if all(label == IGNORE_INDEX for label in tokenized.labels[1:]):
        return None
    return tokenized


def tokenize_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text followed by EOS (the document separator for packing)."""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [[*ids, eos] if eos is not None else ids for ids in encoded]


def pack(token_lists: Sequence[Sequence[int]], seq_len: int) -> list[list[int]]:
    """Concatenate documents and cut the stream into blocks of ``seq_len`` tokens (the last partial block is
    dropped). Every token carries loss; attention crosses document boundaries, as in GPT-style pre-training,
    with EOS marking where one document ends."""
    stream = [token for tokens in token_lists for token in tokens]
    return [stream[start : start + seq_len] for start in range(0, len(stream) - seq_len + 1, seq_len)]


def pad_collate(
    examples: Sequence[TokenizedExample], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad to the longest example of the batch. Returns input_ids, attention_mask, labels: (B, T)."""
    length = max(len(example) for example in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example)
        span = slice(0, n) if padding_side == "right" else slice(length - n, length)
        input_ids[row, span] = torch.tensor(example.input_ids)
        labels[row, span] = torch.tensor(example.labels)
        attention_mask[row, span] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def tokenize_conversation(tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int) -> list[int]:
    """Token ids of a rendered conversation, tokenised piece by piece exactly as :func:`tokenize_sft` does
    (so a reward model scores the same tokens the policy was trained and sampled on)."""
    trained = [m["role"] == "assistant" for m in messages]
    segments = conversation_segments(tokenizer, list(messages), trained)
    return tokenize_segments(tokenizer, segments).input_ids[:max_length]
