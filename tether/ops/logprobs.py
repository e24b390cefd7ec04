"""Log-probabilities and entropy from logits, always in fp32.

Logits at position t predict token t+1. ``gather_logprobs`` computes ``logit[label] - logsumexp(logits)``
row by row in chunks, so the full (…, V) log-softmax is never materialised at once.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def shift_labels(input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Targets aligned with logits: position t holds the token at t+1; the last position is ignored.

    input_ids/labels: (B, T) -> (B, T) with ``IGNORE_INDEX`` in the last column.
    """
    source = input_ids if labels is None else labels
    shifted = torch.full_like(source, IGNORE_INDEX)
    shifted[:, :-1] = source[:, 1:]
    return shifted


def gather_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, chunk_size: int = 1024
) -> torch.Tensor:
    """log softmax(logits / temperature)[label] for every position, in fp32.

    logits: (..., V); labels: (...) integer ids. Positions whose label is ``IGNORE_INDEX`` (or any
    negative id) get 0. Returns (...) fp32. Rows are processed in chunks of ``chunk_size`` to bound the
    fp32 copy of the logits.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_labels = labels.reshape(-1)
    valid = flat_labels >= 0
    safe_labels = torch.where(valid, flat_labels, torch.zeros_like(flat_labels))
    pieces = []
    for start in range(0, flat_logits.shape[0], chunk_size):
        rows = flat_logits[start : start + chunk_size].float()
        if temperature != 1.0:
            rows = rows / temperature
        picked = rows.gather(-1, safe_labels[start : start + chunk_size, None]).squeeze(-1)
        pieces.append(picked - torch.logsumexp(rows, dim=-1))
    logprobs = torch.cat(pieces) if pieces else flat_logits.new_zeros(0, dtype=torch.float32)
    return torch.where(valid, logprobs, torch.zeros_like(logprobs)).reshape(labels.shape)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy H = logsumexp(z) - Σ softmax(z)·z of the next-token distribution, fp32. (..., V) -> (...)."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    probs = torch.softmax(z, dim=-1)
    return torch.logsumexp(z, dim=-1) - (probs * z).sum(-1)


def logprobs_and_entropy(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(z)[label] and the entropy H = −Σ p·log p of softmax(z), z = logits / temperature, both
    fp32, from one log-softmax (K, V) → (K,), (K,): what :func:`gather_logprobs` and
    :func:`entropy_from_logits` give, for a forward that needs both (each would otherwise take its own
    logsumexp over the vocabulary). Labels must be valid ids."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    logp = torch.log_softmax(z, dim=-1)
    picked = logp.gather(-1, labels[..., None]).squeeze(-1)
    return picked, -(logp.exp() * logp).sum(-1)
