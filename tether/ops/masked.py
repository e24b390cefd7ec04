"""Masked reductions. ``mask`` is 1 for real (response) tokens and 0 elsewhere; inputs are never modified."""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ values·mask over ``dim`` (all elements when None)."""
    weighted = values * mask.to(values.dtype)
    return weighted.sum() if dim is None else weighted.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ values·mask / Σ mask over ``dim``; 0 where the mask is empty (no division by zero)."""
    mask = mask.to(values.dtype)
    total = masked_sum(values, mask, dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked elements (Bessel-corrected when ``unbiased`` and more than one element)."""
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    squared = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        squared = squared * count / (count - 1)
    return squared


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(values − mean) / std over the masked elements; masked-out entries are returned as 0."""
    mean = masked_mean(values, mask)
    std = torch.sqrt(masked_var(values, mask) + eps)
    whitened = (values - mean) / std if shift_mean else values / std
    return whitened * mask.to(values.dtype)
