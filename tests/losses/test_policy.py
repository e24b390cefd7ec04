"""Policy-gradient losses against hand-worked values and an exactly enumerable bandit.

Letters: N rows, A response tokens. Log-probs are built as old + log ρ so the ratio ρ is exact.
"""

from __future__ import annotations

import math

import pytest
import torch

from tether.losses.policy import (
    aggregate,
    entropy_bonus,
    importance_weighted_loss,
    ppo_clip_loss,
    reinforce_loss,
    value_loss,
)

PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0], [100.0, 100.0, 100.0, 100.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def _policy_inputs(advantages: list[float], ratios: list[float]) -> tuple[torch.Tensor, ...]:
    """One token per row (N, 1): old log-probs, new log-probs (leaf, requires grad), advantages, mask."""
    old = torch.linspace(-2.0, -0.5, len(ratios), dtype=torch.float64)[:, None]
    new = (old + torch.tensor(ratios, dtype=torch.float64).log()[:, None]).requires_grad_(True)
    adv = torch.tensor(advantages, dtype=torch.float64)[:, None]
    return old, new, adv, torch.ones_like(adv)


def test_aggregate_modes_hand_worked() -> None:
    # Real tokens: row 0 → (1, 2, 3), row 1 → (4), row 2 empty; the 100s are padding.
    #   token_mean          = (1 + 2 + 3 + 4) / 4 = 2.5
    #   seq_mean_token_sum  = ((1 + 2 + 3) + 4) / 2 = 5      (the empty row is not counted)
    #   seq_mean_token_mean = ((1 + 2 + 3)/3 + 4/1) / 2 = 3
    assert aggregate(PER_TOKEN, MASK, "token_mean").item() == pytest.approx(2.5)
    assert aggregate(PER_TOKEN, MASK, "seq_mean_token_sum").item() == pytest.approx(5.0)
    assert aggregate(PER_TOKEN, MASK, "seq_mean_token_mean").item() == pytest.approx(3.0)
    torch.testing.assert_close(aggregate(PER_TOKEN, MASK, "none"), PER_TOKEN * MASK)
    with pytest.raises(ValueError, match="loss_agg"):
        aggregate(PER_TOKEN, MASK, "mean")


# ε = 0.2. Per token ℓ = −min(ρA, clip(ρ, 0.8, 1.2)A); ∂ℓ/∂log π = −ρA unless the clipped term is active.
#   A    ρ     ρA     clip(ρ)A   min    ℓ      ∂ℓ/∂log π
#   +2   1.1   2.2    2.2        2.2   −2.2   −2.2   inside
#   +2   1.5   3.0    2.4        2.4   −2.4    0     clipped above: no gain from raising π further
#   +2   0.5   1.0    1.6        1.0   −1.0   −1.0   below 1 − ε but A > 0: not clipped
#   −2   1.1  −2.2   −2.2       −2.2    2.2    2.2   inside
#   −2   0.5  −1.0   −1.6       −1.6    1.6    0     clipped below: no gain from lowering π further
#   −2   1.5  −3.0   −2.4       −3.0    3.0    3.0   above 1 + ε but A < 0: not clipped
PPO_TABLE = [
    (2.0, 1.1, -2.2, -2.2),
    (2.0, 1.5, -2.4, 0.0),
    (2.0, 0.5, -1.0, -1.0),
    (-2.0, 1.1, 2.2, 2.2),
    (-2.0, 0.5, 1.6, 0.0),
    (-2.0, 1.5, 3.0, 3.0),
]


def test_ppo_clip_loss_and_gradient_hand_worked() -> None:
    advantages, ratios, losses, grads = (list(column) for column in zip(*PPO_TABLE))
    old, new, adv, mask = _policy_inputs(advantages, ratios)
    per_token, metrics = ppo_clip_loss(new, old, adv, mask, clip_eps=0.2, loss_agg="none")
    per_token.sum().backward()
    torch.testing.assert_close(per_token.detach()[:, 0], torch.tensor(losses, dtype=torch.float64))
    torch.testing.assert_close(new.grad[:, 0], torch.tensor(grads, dtype=torch.float64))
    assert metrics["policy/clipfrac"].item() == pytest.approx(2 / 6)
    # k3 estimate of KL(π_old ‖ π_new) per token: (ρ − 1) − log ρ.
    approx_kl = sum(ratio - 1 - math.log(ratio) for ratio in ratios) / 6
    assert metrics["policy/approx_kl"].item() == pytest.approx(approx_kl, rel=1e-5)
    assert metrics["policy/ratio_mean"].item() == pytest.approx(sum(ratios) / 6, rel=1e-6)
    assert all(not value.requires_grad for value in metrics.values())


def test_ppo_clip_token_mean_scales_gradient() -> None:
    advantages, ratios, losses, grads = (list(column) for column in zip(*PPO_TABLE))
    old, new, adv, mask = _policy_inputs(advantages, ratios)
    loss, _ = ppo_clip_loss(new, old, adv, mask, clip_eps=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(sum(losses) / 6)
    torch.testing.assert_close(new.grad[:, 0], torch.tensor(grads, dtype=torch.float64) / 6)


def test_ppo_dual_clip_bounds_negative_advantage_loss() -> None:
    # c = 3, ε = 0.2:
    #   A = −2, ρ = 5: −min(−10, −2.4) = 10 > −cA = 6  → ℓ = 6, gradient 0
    #   A = −2, ρ = 2: −min(−4, −2.4) = 4 ≤ 6          → ℓ = 4, gradient −ρA = 4
    #   A = +2, ρ = 5: −min(10, 2.4) = −2.4            → ℓ = −2.4, gradient 0 (dual clip is for A < 0 only)
    old, new, adv, mask = _policy_inputs([-2.0, -2.0, 2.0], [5.0, 2.0, 5.0])
    per_token, metrics = ppo_clip_loss(new, old, adv, mask, clip_eps=0.2, dual_clip=3.0, loss_agg="none")
    per_token.sum().backward()
    torch.testing.assert_close(per_token.detach()[:, 0], torch.tensor([6.0, 4.0, -2.4], dtype=torch.float64))
    torch.testing.assert_close(new.grad[:, 0], torch.tensor([0.0, 4.0, 0.0], dtype=torch.float64))
    assert metrics["policy/dual_clipfrac"].item() == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_clip_loss(new, old, adv, mask, dual_clip=1.0)


def test_ppo_clip_higher_widens_upper_bound_only() -> None:
    # A = +1, ρ = 1.25: symmetric ε = 0.2 clips (ℓ = −1.2, grad 0); ε_high = 0.28 does not (ℓ = −1.25, grad −1.25).
    # A = −1, ρ = 0.75: the lower bound stays 1 − 0.2 = 0.8 → ℓ = 0.8, gradient 0.
    for eps_high, expected_loss, expected_grad in [(None, -1.2, 0.0), (0.28, -1.25, -1.25)]:
        old, new, adv, mask = _policy_inputs([1.0, -1.0], [1.25, 0.75])
        per_token, _ = ppo_clip_loss(
            new, old, adv, mask, clip_eps=0.2, clip_eps_high=eps_high, loss_agg="none"
        )
        per_token.sum().backward()
        torch.testing.assert_close(
            per_token.detach()[:, 0], torch.tensor([expected_loss, 0.8], dtype=torch.float64)
        )
        torch.testing.assert_close(new.grad[:, 0], torch.tensor([expected_grad, 0.0], dtype=torch.float64))


def test_ppo_equals_importance_weighted_inside_clip_range() -> None:
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    new = old + 0.1 * torch.rand(4, 5, generator=generator, dtype=torch.float64) - 0.05  # |log ρ| ≤ 0.05
    advantages = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    for mode in ("token_mean", "seq_mean_token_sum", "seq_mean_token_mean"):
        ppo, metrics = ppo_clip_loss(new, old, advantages, mask, clip_eps=0.2, loss_agg=mode)
        weighted, _ = importance_weighted_loss(new, old, advantages, mask, loss_agg=mode)
        torch.testing.assert_close(ppo, weighted)
        assert metrics["policy/clipfrac"].item() == 0.0


def test_importance_weighted_hand_worked_and_on_policy_gradient_is_reinforce() -> None:
    # ρ = 2, A = 1: ℓ = −2, ∂ℓ/∂log π = −ρA = −2.  ρ = 0.5, A = −4: ℓ = 2, gradient 2.
    old, new, adv, mask = _policy_inputs([1.0, -4.0], [2.0, 0.5])
    per_token, _ = importance_weighted_loss(new, old, adv, mask, loss_agg="none")
    per_token.sum().backward()
    torch.testing.assert_close(per_token.detach()[:, 0], torch.tensor([-2.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(new.grad[:, 0], torch.tensor([-2.0, 2.0], dtype=torch.float64))
    # At ρ = 1 the gradient equals REINFORCE's −A ∇log π.
    logprobs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    advantages = torch.tensor([[0.5, -1.5]])
    importance_weighted_loss(logprobs, logprobs.detach().clone(), advantages, torch.ones(1, 2))[0].backward()
    weighted_grad = logprobs.grad.clone()
    logprobs.grad = None
    reinforce_loss(logprobs, advantages, torch.ones(1, 2))[0].backward()
    torch.testing.assert_close(weighted_grad, logprobs.grad)


def test_reinforce_loss_hand_worked() -> None:
    # ℓ = −A log π on the two real tokens: (−2·(−0.5), −(−1)·(−1)) = (1, −1), token mean 0; 3rd masked.
    logprobs = torch.tensor([[-0.5, -1.0, -9.0]], requires_grad=True)
    advantages = torch.tensor([[2.0, -1.0, 5.0]])
    loss, _ = reinforce_loss(logprobs, advantages, torch.tensor([[1, 1, 0]]))
    loss.backward()
    assert loss.item() == pytest.approx(0.0)
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1.0, 0.5, 0.0]]))  # −A / 2 real tokens


@pytest.mark.parametrize("baseline", [0.0, 1.25])
def test_reinforce_monte_carlo_gradient_matches_exact_bandit_gradient(baseline: float) -> None:
    # A softmax policy over 4 arms: J(θ) = Σ_a π_θ(a) r_a. Exact ∇J by autograd on the enumerated sum;
    # REINFORCE estimates it by the mean of (r_a − b) ∇log π_θ(a) over S samples (b constant: still unbiased).
    logits = torch.tensor([0.3, -0.2, 0.5, 0.0], dtype=torch.float64, requires_grad=True)
    rewards = torch.tensor([1.0, 0.0, 2.0, -1.0], dtype=torch.float64)
    probs = torch.softmax(logits, dim=0)
    (exact_grad,) = torch.autograd.grad((probs * rewards).sum(), logits)

    samples = 200_000
    generator = torch.Generator().manual_seed(1234)
    actions = torch.multinomial(probs.detach(), samples, replacement=True, generator=generator)  # (S,)
    logprobs = torch.log_softmax(logits, dim=0)[actions][:, None]  # (N = S, A = 1)
    advantages = (rewards[actions] - baseline)[:, None]
    loss, _ = reinforce_loss(logprobs, advantages, torch.ones_like(advantages), loss_agg="token_mean")
    (estimate,) = torch.autograd.grad(-loss, logits)

    # Per-sample gradient g(a)_k = (r_a − b)(1[a = k] − π_k); its variance by enumeration sets the tolerance:
    # the mean of S samples has standard error sqrt(Var/S); allow 5 standard errors.
    pi = probs.detach()
    per_arm = (rewards - baseline)[:, None] * (torch.eye(4, dtype=torch.float64) - pi[None, :])  # (arm, k)
    variance = (pi[:, None] * per_arm**2).sum(0) - exact_grad**2
    tolerance = 5.0 * torch.sqrt(variance / samples)
    assert torch.all((estimate - exact_grad).abs() <= tolerance), (estimate, exact_grad, tolerance)
    torch.testing.assert_close((pi[:, None] * per_arm).sum(0), exact_grad)  # the enumeration itself is exact


def test_value_loss_clipped_vs_unclipped_hand_worked() -> None:
    # c = 0.2.  (V, V_old, R):
    #   (1.5, 1.0, 2.0): (V−R)² = 0.25; V_clip = 1.2, (V_clip−R)² = 0.64 → clipped term active, ℓ = 0.32, grad 0
    #   (1.1, 1.0, 0.0): inside the range, both 1.21                  → ℓ = 0.605, grad V − R = 1.1
    #   (0.5, 1.0, 1.0): 0.25; V_clip = 0.8, 0.04 → unclipped active  → ℓ = 0.125, grad V − R = −0.5
    # Unclipped: ½(0.25, 1.21, 0.25) = (0.125, 0.605, 0.125), token mean 0.855/3 = 0.285.
    # Clipped: (0.32, 0.605, 0.125), token mean 1.05/3 = 0.35; clipfrac 1/3.
    values = torch.tensor([[1.5, 1.1, 0.5]], dtype=torch.float64, requires_grad=True)
    old_values = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    returns = torch.tensor([[2.0, 0.0, 1.0]], dtype=torch.float64)
    mask = torch.ones(1, 3)
    unclipped, _ = value_loss(values, returns, mask)
    assert unclipped.item() == pytest.approx(0.285)
    per_token, metrics = value_loss(
        values, returns, mask, old_values=old_values, clip_range=0.2, loss_agg="none"
    )
    torch.testing.assert_close(per_token.detach(), torch.tensor([[0.32, 0.605, 0.125]], dtype=torch.float64))
    assert per_token.sum().item() / 3 == pytest.approx(0.35)
    assert metrics["value/clipfrac"].item() == pytest.approx(1 / 3)
    per_token.sum().backward()
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 1.1, -0.5]], dtype=torch.float64))
    with pytest.raises(ValueError, match="old_values"):
        value_loss(values, returns, mask, clip_range=0.2)


def test_value_loss_explained_variance() -> None:
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    _, perfect = value_loss(returns.clone(), returns, mask)
    assert perfect["value/explained_variance"].item() == pytest.approx(1.0)
    _, constant = value_loss(torch.full_like(returns, 2.0), returns, mask)  # V = mean(R) → 0
    assert constant["value/explained_variance"].item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_bonus_hand_worked() -> None:
    # Real entropies: row 0 → (1, 2), row 1 → (3). token_mean H = 2 → loss −2; seq_mean_token_mean = (1.5+3)/2.
    entropies = torch.tensor([[1.0, 2.0, 9.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    loss, metrics = entropy_bonus(entropies, mask)
    assert loss.item() == pytest.approx(-2.0)
    assert metrics["policy/entropy"].item() == pytest.approx(2.0)
    assert entropy_bonus(entropies, mask, "seq_mean_token_mean")[0].item() == pytest.approx(-2.25)


def test_losses_do_not_modify_inputs() -> None:
    generator = torch.Generator().manual_seed(2)
    tensors = [torch.randn(3, 4, generator=generator) for _ in range(4)]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    before = [tensor.clone() for tensor in (*tensors, mask)]
    new, old, advantages, entropies = tensors
    reinforce_loss(new, advantages, mask)
    importance_weighted_loss(new, old, advantages, mask)
    ppo_clip_loss(new, old, advantages, mask, dual_clip=3.0)
    value_loss(new, advantages, mask, old_values=old, clip_range=0.2)
    entropy_bonus(entropies, mask)
    for original, tensor in zip(before, (*tensors, mask)):
        assert torch.equal(original, tensor)
