"""Regularised reward: the score of a response minus β times its KL to the reference, per token.

r_t = −β·KL_t for every response token, plus the score at the last one (Ziegler et al. 2019; Stiennon
et al. 2020; the lecture's reward − β·KL(π ‖ π_ref)). KL_t is a k1/k2/k3 estimate (``ops.kl``). β is fixed
or adapted to keep the measured KL near a target (Ziegler et al. 2019, §2.2).
"""

from __future__ import annotations

import torch

from tether.ops.kl import kl_estimate


def last_token_index(response_mask: torch.Tensor) -> torch.Tensor:
    """(N, A) → (N,) index of the last real response token (0 for an empty response)."""
    positions = torch.arange(response_mask.shape[1], device=response_mask.device)
    return (response_mask.long() * (positions + 1)).argmax(-1)


def shaped_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards (N, A) and the per-token KL estimates (N, A) used for them.

    scores (N,); logprobs, ref_logprobs, response_mask (N, A).
    """
    mask = response_mask.float()
    kl = kl_estimate(logprobs, ref_logprobs, estimator) * mask  # (N, A)
    rewards = -kl_coef * kl
    rows = torch.arange(scores.shape[0], device=scores.device)
    rewards[rows, last_token_index(response_mask)] += scores.float()
    return rewards * mask, kl


class AdaptiveKLController:
    """β ← β·(1 + K_β·e), e = clip(KL/target − 1, −0.2, 0.2)·(n/horizon): raise β when the KL overshoots the
    target, lower it when it undershoots (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
    Preferences", §2.2, with K_β = 0.1). With ``target`` None it keeps β fixed."""

    def __init__(self, kl_coef: float, target: float | None = None, horizon: int = 10_000, gain: float = 0.1):
        self.value, self.target, self.horizon, self.gain = kl_coef, target, horizon, gain

    def update(self, measured_kl: float, n_samples: int) -> float:
        if self.target:
            error = max(-0.2, min(0.2, measured_kl / self.target - 1.0))
            self.value *= 1.0 + self.gain * error * n_samples / self.horizon
        return self.value
