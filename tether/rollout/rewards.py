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
    """β ← β·(1 + e·n/horizon), e = clip(KL/target − 1, −0.2, 0.2), after each batch of n samples: raise β
    when the measured KL overshoots the target, lower it when it undershoots (Ziegler et al. 2019,
    "Fine-Tuning Language Models from Human Preferences", §2.2; the proportional rule of their released
    code, which TRL, OpenRLHF and verl keep). The paper's per-step gain K_β is n/horizon here: with n = 32
    and horizon 320 it is 0.1, so β can move by up to 2 % per iteration. With ``target`` None β stays fixed.
    """

    def __init__(self, kl_coef: float, target: float | None = None, horizon: int = 10_000):
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, measured_kl: float, n_samples: int) -> float:
        if self.target:
            error = max(-0.2, min(0.2, measured_kl / self.target - 1.0))
            self.value *= 1.0 + error * n_samples / self.horizon
        return self.value


def penalise_unfinished(scores: torch.Tensor, finished: torch.Tensor, penalty: float) -> torch.Tensor:
    """score − penalty for a response that never stopped (hit max_new_tokens), the score itself otherwise.

    Subtracting (rather than replacing the score by a constant) means truncating a response can never
    raise its score, whatever the scorer's range. scores (N,), finished (N,) bool -> (N,)."""
    if penalty < 0:
        raise ValueError(f"unfinished penalty must be non-negative, got {penalty}")
    return scores - penalty * (~finished.bool()).to(scores.dtype)
