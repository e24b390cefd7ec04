"""Next-token prediction: the negative log-likelihood of pre-training and SFT.

L(θ) = −Σ_t m_t · log π_θ(x_{t+1} | x_{≤t}), with m_t = 1 on tokens that carry loss (all tokens in
pre-training, response tokens in SFT). Losses are returned per example as sums with their token counts,
so the trainer can divide by the number of loss tokens in the whole (accumulated, all-process) batch —
the normalisation that makes gradient accumulation exact.
"""

from __future__ import annotations

import torch

from tether.ops.logprobs import IGNORE_INDEX, gather_logprobs, shift_labels


def nll_loss(
    token_logprobs: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Summed NLL per example from per-token log-probs.

    token_logprobs, loss_mask: (B, T). Returns (nll_sum (B,), n_tokens (B,), metrics).
    """
    mask = loss_mask.to(token_logprobs.dtype)
    nll_sum = -(token_logprobs * mask).sum(-1)  # (B,)
    n_tokens = mask.sum(-1)  # (B,)
    metrics = {"tokens": n_tokens.sum().detach()}
    return nll_sum, n_tokens, metrics


def causal_lm_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean NLL per loss token from full logits (B, T, V); labels aligned with input_ids, −100 ignored."""
    targets = shift_labels(input_ids, labels)  # (B, T)
    logprobs = gather_logprobs(logits, targets)  # (B, T)
    nll_sum, n_tokens, _ = nll_loss(logprobs, targets != IGNORE_INDEX)
    return nll_sum.sum() / n_tokens.sum().clamp(min=1)
