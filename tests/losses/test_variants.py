"""GSPO, DAPO and truncated importance sampling against their papers' formulas on hand-worked values, with
autograd gradients compared to the closed-form ones.

Letters: N rows, A response tokens. New log-probs are built as old + log ρ so every ratio is exact.
"""

from __future__ import annotations

import math

import pytest
import torch

from tether.losses.policy import ppo_clip_loss
from tether.losses.variants import (
    dapo_clip_loss,
    dynamic_sampling_mask,
    gspo_loss,
    gspo_token_loss,
    sequence_advantages,
    truncated_importance_weights,
)

D = torch.float64


def _rows(log_ratios: list[list[float]], width: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """old (N, A), new = old + log ρ (leaf, requires grad), mask (N, A) from ragged per-token log-ratios.
    Padding holds junk (−50) that must never matter."""
    n = len(log_ratios)
    old = torch.full((n, width), -50.0, dtype=D)
    delta = torch.zeros(n, width, dtype=D)
    mask = torch.zeros(n, width, dtype=D)
    for i, row in enumerate(log_ratios):
        for t, value in enumerate(row):
            old[i, t] = -1.0 - 0.1 * (i + t)
            delta[i, t] = value
            mask[i, t] = 1.0
    return old, (old + delta).requires_grad_(True), mask


# GSPO, ε_low = 0.2, ε_high = 0.3 (range [0.8, 1.3]); s_i = exp(mean_t log ρ_i,t).
#   row  |y|  token log ρ                       s     Â    sÂ     clip(s)Â  ℓ = −min   ∂ℓ/∂log π_t (before 1/4)
#   0    2    ln1.2 + 0.3, ln1.2 − 0.3          1.2   +2   2.4    2.4      −2.4       −Â s/|y| = −1.2
#   1    3    ln0.5 + 0.2, ln0.5, ln0.5 − 0.2   0.5   −1   −0.5   −0.8      0.8       0 (clipped below)
#   2    1    ln1.5                             1.5   +1   1.5    1.3      −1.3       0 (clipped above)
#   3    3    ln1.5 ± 0.4, ln1.5                1.5   −1   −1.5   −1.3      1.5       −Â s/|y| = 0.5
#   4    0    (empty)                           –     +5   –      –         –         – (not counted)
# Loss = mean over the 4 non-empty rows = (−2.4 + 0.8 − 1.3 + 1.5) / 4 = −0.35. Row 0's first token alone
# has ρ = 1.2·e^0.3 ≈ 1.62, far outside PPO's token range: GSPO judges the whole response, not the token.
GSPO_LOG_RATIOS = [
    [math.log(1.2) + 0.3, math.log(1.2) - 0.3],
    [math.log(0.5) + 0.2, math.log(0.5), math.log(0.5) - 0.2],
    [math.log(1.5)],
    [math.log(1.5) + 0.4, math.log(1.5) - 0.4, math.log(1.5)],
    [],
]
GSPO_ADVANTAGES = [2.0, -1.0, 1.0, -1.0, 5.0]


def test_gspo_hand_worked_values_and_gradient() -> None:
    old, new, mask = _rows(GSPO_LOG_RATIOS)
    advantages = torch.tensor(GSPO_ADVANTAGES, dtype=D)
    per_sequence, _ = gspo_loss(new, old, advantages, mask, clip_eps=0.2, clip_eps_high=0.3, loss_agg="none")
    torch.testing.assert_close(per_sequence.detach(), torch.tensor([-2.4, 0.8, -1.3, 1.5, 0.0], dtype=D))

    loss, metrics = gspo_loss(new, old, advantages, mask, clip_eps=0.2, clip_eps_high=0.3)
    loss.backward()
    assert loss.item() == pytest.approx(-0.35)
    expected_grad = torch.tensor(
        [[-1.2, -1.2, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]], dtype=D
    )
    torch.testing.assert_close(new.grad, expected_grad / 4)
    assert metrics["policy/clipfrac"].item() == pytest.approx(2 / 4)
    assert metrics["policy/seq_ratio_mean"].item() == pytest.approx((1.2 + 0.5 + 1.5 + 1.5) / 4)
    assert all(not value.requires_grad for value in metrics.values())


def test_gspo_token_level_advantages_are_averaged_per_row() -> None:
    old, new, mask = _rows(GSPO_LOG_RATIOS)
    per_row = torch.tensor(GSPO_ADVANTAGES, dtype=D)
    broadcast = per_row[:, None] * mask + 99.0 * (1 - mask)  # the padding value must not count
    torch.testing.assert_close(sequence_advantages(broadcast, mask)[:4], per_row[:4])
    a, _ = gspo_loss(new, old, per_row, mask, clip_eps=0.2, clip_eps_high=0.3)
    b, _ = gspo_loss(new, old, broadcast, mask, clip_eps=0.2, clip_eps_high=0.3)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="loss_agg"):
        gspo_loss(new, old, per_row, mask, loss_agg="token_mean")


def test_gspo_gradient_matches_closed_form_on_random_inputs() -> None:
    # Wide clip range, so nothing is clipped: ∂L/∂log π_i,t = −Â_i s_i / (|y_i| · #rows) on real tokens.
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(4, 5, generator=generator, dtype=D)
    new = (old + 0.3 * torch.randn(4, 5, generator=generator, dtype=D)).requires_grad_(True)
    advantages = torch.randn(4, generator=generator, dtype=D)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=D)
    loss, metrics = gspo_loss(new, old, advantages, mask, clip_eps=0.99, clip_eps_high=100.0)
    loss.backward()
    lengths = mask.sum(-1)
    s = torch.exp(((new.detach() - old) * mask).sum(-1) / lengths)
    expected = (-advantages * s / lengths / 4)[:, None] * mask
    torch.testing.assert_close(new.grad, expected)
    assert metrics["policy/clipfrac"].item() == 0.0

    # GSPO-token with the same advantage at every token: the same loss and the same gradient.
    grad = new.grad.clone()
    new.grad = None
    token_loss, _ = gspo_token_loss(
        new, old, advantages[:, None] * mask, mask, clip_eps=0.99, clip_eps_high=100.0
    )
    token_loss.backward()
    torch.testing.assert_close(token_loss, loss)
    torch.testing.assert_close(new.grad, grad)


def test_gspo_token_per_token_advantages_closed_form() -> None:
    # One row of 2 tokens, log ρ = (0.1, −0.3): s = exp(−0.1). Â = (+1, −2), range wide open.
    #   ℓ = −(1/2)(s·1 + s·(−2)) = s/2;  ∂ℓ/∂log π_t = −Â_t s / 2 = (−s/2, s).
    old = torch.tensor([[-1.0, -2.0]], dtype=D)
    new = (old + torch.tensor([[0.1, -0.3]], dtype=D)).requires_grad_(True)
    advantages = torch.tensor([[1.0, -2.0]], dtype=D)
    loss, _ = gspo_token_loss(new, old, advantages, torch.ones(1, 2), clip_eps=0.99, clip_eps_high=100.0)
    loss.backward()
    s = math.exp(-0.1)
    assert loss.item() == pytest.approx(s / 2)
    torch.testing.assert_close(new.grad, torch.tensor([[-s / 2, s]], dtype=D))

    # Clipped above (s = e^0.2 ≈ 1.22 > 1 + 0.1) with Â > 0: no gradient from that token; the Â < 0
    # token is on the unclipped side: gradient −Â s / 2.
    new = (old + 0.2).requires_grad_(True)
    loss, metrics = gspo_token_loss(new, old, advantages, torch.ones(1, 2), clip_eps=0.1, clip_eps_high=0.1)
    loss.backward()
    s = math.exp(0.2)
    assert loss.item() == pytest.approx(-(1.1 * 1.0 + s * -2.0) / 2)
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, s]], dtype=D))
    assert metrics["policy/clipfrac"].item() == pytest.approx(0.5)


# DAPO eq. 8 with ε_low = 0.2, ε_high = 0.28, token-level aggregation 1/Σ|o_i| Σ_i Σ_t:
#   row 0, one token:    Â = +1, r = 1.25: inside [0.8, 1.28] → ℓ = −1.25, ∂ℓ/∂log π = −rÂ = −1.25
#   row 1, three tokens: Â = −1, r = 0.7: clip → 0.8, min(−0.7, −0.8) = −0.8 → ℓ = 0.8, gradient 0
#                                 r = 1.0:                                   ℓ = 1.0, gradient 1.0
#                                 r = 1.3: min(−1.3, −1.28) = −1.3 (Â < 0: not clipped) → ℓ = 1.3, gradient 1.3
#   token mean: (−1.25 + 0.8 + 1.0 + 1.3) / 4 = 0.4625; each token's gradient divided by 4.
#   GRPO's per-response mean would give (−1.25 + (0.8 + 1.0 + 1.3)/3) / 2 = −0.108333…, and row 0's
#   single token twice the weight (−1.25/2) of DAPO's (−1.25/4).
DAPO_LOG_RATIOS = [[math.log(1.25)], [math.log(0.7), 0.0, math.log(1.3)]]


def test_dapo_clip_higher_token_level_hand_worked() -> None:
    old, new, mask = _rows(DAPO_LOG_RATIOS)
    advantages = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], dtype=D)
    loss, metrics = dapo_clip_loss(new, old, advantages, mask)
    loss.backward()
    assert loss.item() == pytest.approx(0.4625)
    torch.testing.assert_close(new.grad, torch.tensor([[-1.25, 0, 0], [0.0, 1.0, 1.3]], dtype=D) / 4)
    assert metrics["policy/clipfrac"].item() == pytest.approx(1 / 4)

    new.grad = None
    grpo, _ = ppo_clip_loss(
        new, old, advantages, mask, 0.2, clip_eps_high=0.28, loss_agg="seq_mean_token_mean"
    )
    grpo.backward()
    assert grpo.item() == pytest.approx((-1.25 + 3.1 / 3) / 2)
    assert new.grad[0, 0].item() == pytest.approx(-1.25 / 2)

    # Symmetric ε = 0.2 would clip row 0 (1.25 > 1.2): ℓ = −1.2 and no gradient — what clip-higher avoids.
    new.grad = None
    symmetric, _ = dapo_clip_loss(new, old, advantages, mask, clip_eps_high=0.2)
    symmetric.backward()
    assert symmetric.item() == pytest.approx((-1.2 + 0.8 + 1.0 + 1.3) / 4)
    assert new.grad[0, 0].item() == 0.0


def test_dynamic_sampling_keeps_groups_with_different_rewards() -> None:
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5001])
    keep = dynamic_sampling_mask(scores, group_size=3)
    assert keep.tolist() == [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3
    assert dynamic_sampling_mask(scores, 3, tolerance=1e-3).tolist() == [False] * 3 + [True] * 3 + [False] * 6
    assert dynamic_sampling_mask(scores, 1).tolist() == [False] * 12  # one sample: nothing to compare
    with pytest.raises(ValueError, match="groups of 5"):
        dynamic_sampling_mask(scores, 5)


# Truncated IS, cap C = 2. log ρ = log π_train − log π_rollout on real tokens:
#   row 0: ρ = (0.5, 3, 1)  row 1: ρ = (3)   (padding: rollout −inf, train junk — must not leak)
#   token level:    w = (0.5, 2, 1), (2)           capped 2 of 4 tokens; mean w = 5.5/4 = 1.375
#   sequence level: Π ρ = 1.5 → w = 1.5 ×3; 3 → 2  capped 1 of 2 rows;   mean w = (4.5 + 2)/4 = 1.625
#   mean |log ρ| = (ln 2 + ln 3 + 0 + ln 3)/4;  k3 of KL(π_rollout ‖ π_train) per token = ρ − 1 − ln ρ.
def _mismatch_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rollout = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, float("-inf"), float("-inf")]], dtype=D)
    log_rho = torch.tensor([[math.log(0.5), math.log(3.0), 0.0], [math.log(3.0), 7.0, 7.0]], dtype=D)
    train = (rollout.nan_to_num(neginf=-30.0) + log_rho).requires_grad_(True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    return train, rollout, mask


def test_truncated_importance_weights_token_level() -> None:
    train, rollout, mask = _mismatch_inputs()
    weights, metrics = truncated_importance_weights(train, rollout, mask, cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([[0.5, 2.0, 1.0], [2.0, 0.0, 0.0]]))
    assert not weights.requires_grad
    assert metrics["mismatch/capped_frac"].item() == pytest.approx(0.5)
    assert metrics["mismatch/weight_mean"].item() == pytest.approx(1.375)
    assert metrics["mismatch/log_ratio_abs"].item() == pytest.approx(
        (math.log(2) + 2 * math.log(3)) / 4, rel=1e-6
    )
    k3 = sum(rho - 1 - math.log(rho) for rho in (0.5, 3.0, 1.0, 3.0)) / 4
    assert metrics["mismatch/kl_k3"].item() == pytest.approx(k3, rel=1e-6)
    assert all(torch.isfinite(value) for value in metrics.values())


def test_truncated_importance_weights_sequence_level() -> None:
    train, rollout, mask = _mismatch_inputs()
    weights, metrics = truncated_importance_weights(train, rollout, mask, cap=2.0, level="sequence")
    torch.testing.assert_close(weights, torch.tensor([[1.5, 1.5, 1.5], [2.0, 0.0, 0.0]]))
    assert metrics["mismatch/capped_frac"].item() == pytest.approx(0.5)
    assert metrics["mismatch/weight_mean"].item() == pytest.approx(1.625)
    with pytest.raises(ValueError, match="level"):
        truncated_importance_weights(train, rollout, mask, level="tokens")
    with pytest.raises(ValueError, match="cap"):
        truncated_importance_weights(train, rollout, mask, cap=0.0)


def test_truncated_weights_scale_the_policy_gradient_and_carry_none() -> None:
    # A TIS-corrected REINFORCE loss ℓ_t = −w_t Â_t log π_θ(y_t): ∂ℓ/∂log π_t = −w_t Â_t, and no gradient
    # reaches train_logprobs through w (it is a constant).
    train, rollout, mask = _mismatch_inputs()
    weights, _ = truncated_importance_weights(train, rollout, mask, cap=2.0)
    policy = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.0, -1.0]], dtype=D, requires_grad=True)
    advantages = torch.tensor([[1.0, -1.0, 2.0], [3.0, 0.0, 0.0]], dtype=D)
    (-(weights * advantages * policy * mask).sum()).backward()
    torch.testing.assert_close(policy.grad, torch.tensor([[-0.5, 2.0, -2.0], [-6.0, 0.0, 0.0]], dtype=D))
    assert train.grad is None


# The whole response's ratio (length_normalised=False, TRL's RLOO), ε = 0.2 (range [0.8, 1.2]):
#   row  |y|  token log ρ        ρ      Â    ρÂ     clip(ρ)Â  ℓ = −min   ∂ℓ/∂log π_t (before 1/4)
#   0    2    ln1.1, 0           1.1    +2   2.2    2.2      −2.2       −Âρ = −2.2 on each token
#   1    2    ln1.2, ln1.2       1.44   +1   1.44   1.2      −1.2       0 (clipped above)
#   2    1    ln0.5              0.5    −1   −0.5   −0.8     0.8        0 (clipped below)
#   3    3    ln0.9, 0, 0        0.9    −2   −1.8   −1.8     1.8        −Âρ = 1.8 on each token
#   4    0    (empty)            –      +5   –      –        –          – (not counted)
# Loss = (−2.2 − 1.2 + 0.8 + 1.8) / 4 = −0.2. Row 1's tokens are each inside PPO's token range (1.2), and
# GSPO's geometric mean (1.2) too: only the product of the ratios leaves the range.
SEQ_LOG_RATIOS = [
    [math.log(1.1), 0.0],
    [math.log(1.2), math.log(1.2)],
    [math.log(0.5)],
    [math.log(0.9), 0.0, 0.0],
    [],
]
SEQ_ADVANTAGES = [2.0, 1.0, -1.0, -2.0, 5.0]


def test_the_whole_response_ratio_hand_worked_values_and_gradient() -> None:
    old, new, mask = _rows(SEQ_LOG_RATIOS)
    advantages = torch.tensor(SEQ_ADVANTAGES, dtype=D)
    loss, metrics = gspo_loss(new, old, advantages, mask, 0.2, 0.2, length_normalised=False)
    loss.backward()
    assert loss.item() == pytest.approx(-0.2)
    expected = torch.tensor(
        [[-2.2, -2.2, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.8, 1.8, 1.8], [0.0, 0.0, 0.0]], dtype=D
    )
    torch.testing.assert_close(new.grad, expected / 4)
    assert metrics["policy/clipfrac"].item() == pytest.approx(2 / 4)
    assert metrics["policy/seq_ratio_mean"].item() == pytest.approx((1.1 + 1.44 + 0.5 + 0.9) / 4)


def test_the_whole_response_ratio_on_policy_is_reinforce() -> None:
    """At π_θ = π_old (ρ = 1) the gradient is REINFORCE's: −Â_i Σ_t ∇log π_θ(y_i,t), averaged over rows;
    off-policy inside the range, the same times ρ_i."""
    generator = torch.Generator().manual_seed(1)
    old = torch.randn(4, 5, generator=generator, dtype=D)
    advantages = torch.randn(4, generator=generator, dtype=D)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=D)
    for shift in (0.0, 0.05):
        new = (old + shift * torch.randn(4, 5, generator=generator, dtype=D)).requires_grad_(True)
        loss, _ = gspo_loss(new, old, advantages, mask, 0.99, 100.0, length_normalised=False)
        loss.backward()
        rho = torch.exp(((new.detach() - old) * mask).sum(-1))
        torch.testing.assert_close(new.grad, (-advantages * rho / 4)[:, None] * mask)
