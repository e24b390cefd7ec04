"""Per-token Monte-Carlo estimators of KL(π ‖ π_ref) from samples y ~ π (Schulman, "Approximating KL
divergence", 2020). With log-ratio ℓ = log π(y) − log π_ref(y):

- k1 = ℓ                     unbiased, high variance, can be negative;
- k2 = ℓ² / 2                biased, low variance, never negative;
- k3 = (exp(−ℓ) − 1) + ℓ     unbiased, never negative (a Bregman divergence of log).
"""

from __future__ import annotations

import torch


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Elementwise KL estimate from log π and log π_ref of the sampled tokens. Same shape as the inputs."""
    log_ratio = logprobs.float() - ref_logprobs.float()
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; choose k1, k2 or k3")
