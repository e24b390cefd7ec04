"""Advantage estimators for online policy optimisation — a registry keyed by name.

Letters: N rows (N = B·G: B prompts, each repeated G times, rows of one prompt adjacent, as
``repeat_interleave`` lays them out), A response (action) tokens, G samples per prompt.

Inputs, as the rollout produces them:

- ``token_rewards (N, A)``: per-token shaped reward, e.g. the score at the last response token minus
  β·KL at every token. Entries outside the mask are ignored.
- ``response_mask (N, A)``: 1 = real response token, 0 = padding (or any token the policy did not
  choose). Responses are left-aligned and of different lengths (1 … 1 0 … 0); interior zeros are
  allowed too and are skipped, as if the masked token were not there.
- ``values (N, A)``: the value head's V(s_t), detached, for GAE.
- ``scores (N,)``: one scalar reward per response, for the group (outcome-reward) methods. To put a
  KL penalty into the reward of RLOO / GRPO pass ``scores = masked_sum(token_rewards, mask, dim=-1)``,
  which is r(x, y) − β·Σ_t KL_t, the KL-penalised sequence reward RLOO uses (Ahmadian et al. 2024).

Every estimator is a pure function returning ``(advantages (N, A), returns (N, A))``, both zero outside
the mask; ``reinforce_baseline`` also returns its updated baseline (see there). Inputs are never modified.
A response that ends without EOS is treated as terminal (no bootstrap value after its last token).

Use ``get_advantage(name)`` for the function or ``compute_advantages(name, **inputs)`` to call it with
whichever of the shared inputs it declares, so an algorithm can switch estimators by config name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from tether.ops import masked_mean, masked_whiten
from tether.registry import lookup, register

AdvantageFn = Callable[..., tuple[torch.Tensor, ...]]

ADVANTAGES: dict[str, AdvantageFn] = {}

# The keyword vocabulary shared by the estimators; ``compute_advantages`` passes each estimator its subset.
SHARED_INPUTS = frozenset(
    {
        "token_rewards",
        "response_mask",
        "values",
        "scores",
        "group_size",
        "gamma",
        "lam",
        "eps",
        "baseline",
        "momentum",
    }
)


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: add an estimator to ``ADVANTAGES`` under ``name`` (names are unique)."""
    return register(ADVANTAGES, name, "advantage estimator")


def get_advantage(name: str) -> AdvantageFn:
    """The estimator registered under ``name``; an unknown name is an error naming the closest one."""
    return lookup(ADVANTAGES, name, "advantage estimator")


def compute_advantages(name: str, **inputs: Any) -> tuple[torch.Tensor, ...]:
    """Call estimator ``name`` with the subset of ``inputs`` it declares.

    ``inputs`` must be drawn from ``SHARED_INPUTS`` (a typo is an error, not silently dropped); inputs the
    estimator does not use are left out, and a missing required one raises ``TypeError``.
    """
    unknown = set(inputs) - SHARED_INPUTS
    if unknown:
        raise TypeError(
            f"unknown advantage inputs {sorted(unknown)}; expected a subset of {sorted(SHARED_INPUTS)}"
        )
    fn = get_advantage(name)
    accepted = inspect.signature(fn).parameters
    return fn(**{key: value for key, value in inputs.items() if key in accepted})


def whiten_advantages(
    advantages: torch.Tensor, response_mask: torch.Tensor, shift_mean: bool = True
) -> torch.Tensor:
    """(Â − mean) / std over the masked tokens of the whole batch, 0 outside the mask. (N, A) -> (N, A).

    The per-batch normalisation PPO implementations apply to GAE advantages (OpenAI baselines ppo2).
    """
    return masked_whiten(advantages, response_mask, shift_mean=shift_mean)


def _at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """fp16/bf16/integer -> fp32 (sums over long responses need it); fp64 stays fp64."""
    if not tensor.is_floating_point():
        return tensor.float()
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _check_token_inputs(token_rewards: torch.Tensor, response_mask: torch.Tensor) -> None:
    if token_rewards.dim() != 2 or token_rewards.shape != response_mask.shape:
        raise ValueError(
            f"token_rewards {tuple(token_rewards.shape)} and response_mask {tuple(response_mask.shape)} "
            "must both be (N, A)"
        )


def _discounted_returns(
    token_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """G_t = Σ_{k ≥ t} γ^(k−t) r_k over real tokens, by a reverse scan over A. (N, A) -> (N, A), 0 off-mask."""
    real = response_mask.bool()
    rewards = _at_least_fp32(token_rewards)
    running = rewards.new_zeros(rewards.shape[0])  # (N,) return from the next real token on
    columns = []
    for t in reversed(range(rewards.shape[1])):
        running = torch.where(real[:, t], rewards[:, t] + gamma * running, running)
        columns.append(running)
    if not columns:  # A = 0
        return torch.zeros_like(rewards)
    returns = torch.stack(columns[::-1], dim=1)  # (N, A)
    return returns * real


@register_advantage("reward_to_go")
def reward_to_go(
    token_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted reward-to-go, no baseline: A_t = G_t = Σ_{k ≥ t} γ^(k−t) r_k.

    REINFORCE with causality (Williams 1992; Sutton & Barto 2018 §13.3): a token is credited only with
    the rewards that follow it. token_rewards, response_mask: (N, A). Returns (advantages, returns), equal.
    """
    _check_token_inputs(token_rewards, response_mask)
    returns = _discounted_returns(token_rewards, response_mask, gamma)
    return returns, returns.clone()


@register_advantage("gae")
def gae(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, "High-dimensional continuous control using
    generalized advantage estimation", eq. 16):

        δ_t = r_t + γ V(s_{t+1}) − V(s_t),    Â_t = Σ_{l ≥ 0} (γλ)^l δ_{t+l},

    computed by the recursion Â_t = δ_t + γλ Â_{t+1}. V after the last real token is 0 (terminal).
    λ = 1 gives G_t − V(s_t); λ = 0 the one-step TD error. Returns are the λ-returns Â_t + V(s_t), the
    value head's regression target (PPO2).

    token_rewards, values, response_mask: (N, A). Returns (advantages (N, A), returns (N, A)).
    """
    _check_token_inputs(token_rewards, response_mask)
    if values.shape != token_rewards.shape:
        raise ValueError(
            f"values {tuple(values.shape)} must match token_rewards {tuple(token_rewards.shape)}"
        )
    real = response_mask.bool()
    rewards = _at_least_fp32(token_rewards)
    values = _at_least_fp32(values.detach())
    next_value = rewards.new_zeros(rewards.shape[0])  # (N,) V of the next real token, 0 past the end
    running = rewards.new_zeros(rewards.shape[0])  # (N,) Â of the next real token
    columns = []
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(real[:, t], delta + gamma * lam * running, running)
        next_value = torch.where(real[:, t], values[:, t], next_value)
        columns.append(running)
    if not columns:  # A = 0
        return torch.zeros_like(rewards), torch.zeros_like(rewards)
    advantages = torch.stack(columns[::-1], dim=1) * real  # (N, A)
    returns = (advantages + values) * real
    return advantages, returns


@register_advantage("reinforce_baseline")
def reinforce_baseline(
    token_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    baseline: float | torch.Tensor,
    gamma: float = 1.0,
    momentum: float = 0.9,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """REINFORCE with a moving-average baseline (Williams 1992: the reinforcement baseline b in
    Δw = α (r − b) ∂ ln π / ∂w; a running average of past rewards is his suggested choice):
    A_t = G_t − b, with G_t the discounted reward-to-go.

    ``baseline`` b is a scalar carried between steps by the caller: this batch uses the *incoming* b (so
    it does not depend on the batch's own samples and the gradient stays unbiased), then the function
    returns b' = momentum·b + (1 − momentum)·mean_i G_0^(i), the mean full-response return of the batch.
    Start with b = 0 (or the first batch's mean score).

    token_rewards, response_mask: (N, A); baseline: scalar. Returns (advantages (N, A), returns (N, A),
    updated baseline ()).
    """
    _check_token_inputs(token_rewards, response_mask)
    returns = _discounted_returns(token_rewards, response_mask, gamma)
    old_baseline = torch.as_tensor(baseline, dtype=returns.dtype, device=returns.device).detach()
    advantages = (returns - old_baseline) * response_mask.to(returns.dtype)
    has_tokens = response_mask.bool().any(dim=-1)  # (N,)
    first_real = response_mask.float().argmax(dim=-1, keepdim=True)  # (N, 1) column of the first real token
    sequence_returns = returns.gather(1, first_real).squeeze(1)  # (N,) G_0 of each response
    batch_mean = masked_mean(sequence_returns, has_tokens)
    new_baseline = momentum * old_baseline + (1.0 - momentum) * batch_mean
    return advantages, returns, new_baseline


def _grouped(
    scores: torch.Tensor, response_mask: torch.Tensor, group_size: int, minimum: int
) -> torch.Tensor:
    """scores (N,) -> (B, G) after checking N = B·G and G ≥ minimum."""
    if scores.dim() != 1 or scores.shape[0] != response_mask.shape[0]:
        raise ValueError(
            f"scores {tuple(scores.shape)} must be (N,) with N = response_mask rows {response_mask.shape[0]}"
        )
    if group_size < minimum or scores.shape[0] % group_size:
        raise ValueError(
            f"group_size {group_size} must be ≥ {minimum} and divide the number of rows {scores.shape[0]}"
        )
    return _at_least_fp32(scores).reshape(-1, group_size)


def _broadcast(
    sequence_advantages: torch.Tensor, scores: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome reward: every real token of response i gets its sequence advantage; returns are the score."""
    mask = response_mask.to(sequence_advantages.dtype)
    advantages = sequence_advantages.reshape(-1, 1) * mask  # (N, A)
    # The score arrives at the last token, so with γ = 1 every token's return is the score itself.
    returns = _at_least_fp32(scores).reshape(-1, 1) * mask  # (N, A)
    return advantages, returns


@register_advantage("rloo")
def rloo(
    scores: torch.Tensor, response_mask: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, "Back to basics: revisiting REINFORCE style
    optimization for learning from human feedback in LLMs"; Kool et al. 2019, "Buy 4 REINFORCE samples,
    get a baseline for free!"):

        A_i = r_i − 1/(G−1) Σ_{j ≠ i} r_j = G/(G−1) · (r_i − mean_j r_j),

    each of the G samples of a prompt baselined by the mean of the other G − 1. The whole response is one
    action, so every real token gets A_i. scores: (N,), N = B·G; response_mask: (N, A). Needs G ≥ 2.
    """
    grouped = _grouped(scores, response_mask, group_size, minimum=2)  # (B, G)
    others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)  # (B, G)
    return _broadcast((grouped - others_mean).reshape(-1), scores, response_mask)


@register_advantage("grpo")
def grpo(
    scores: torch.Tensor, response_mask: torch.Tensor, group_size: int, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group relative advantage (Shao et al. 2024, "DeepSeekMath", §4.1.2 outcome supervision):

        A_i = (r_i − mean(r_1..G)) / (std(r_1..G) + eps),

    std with Bessel's correction (as TRL and verl compute it). A group whose scores are all equal gets 0.
    scores: (N,), N = B·G; response_mask: (N, A). Needs G ≥ 2.
    """
    grouped = _grouped(scores, response_mask, group_size, minimum=2)  # (B, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    normalised = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return _broadcast(normalised.reshape(-1), scores, response_mask)


@register_advantage("dr_grpo")
def dr_grpo(
    scores: torch.Tensor, response_mask: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO done right (Liu et al. 2025, "Understanding R1-Zero-like training: a critical perspective",
    Dr. GRPO): A_i = r_i − mean(r_1..G), without dividing by the group std, which over-weights prompts that
    are nearly always (or never) solved. Pair it with ``loss_agg="seq_mean_token_sum"``: Liu et al. also
    drop the 1/|y| length normalisation (their constant divisor is absorbed by the learning rate).
    scores: (N,), N = B·G; response_mask: (N, A). Needs G ≥ 1.
    """
    grouped = _grouped(scores, response_mask, group_size, minimum=1)  # (B, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    return _broadcast(centred.reshape(-1), scores, response_mask)


@register_advantage("reinforce_pp")
def reinforce_pp(
    token_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025, "REINFORCE++: a simple and efficient approach for aligning large language
    models"): the token-level reward-to-go G_t (score at the last token minus β·KL per token) is
    normalised over the *global* batch, A_t = (G_t − mean) / std over all real tokens — no critic and no
    per-prompt group. token_rewards, response_mask: (N, A). Returns (advantages, returns = G_t).
    """
    _check_token_inputs(token_rewards, response_mask)
    returns = _discounted_returns(token_rewards, response_mask, gamma)
    return masked_whiten(returns, response_mask), returns
