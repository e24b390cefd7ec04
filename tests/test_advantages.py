"""Advantage estimators against hand-worked values and plain Python loops. Letters: N rows, A tokens, G group."""

from __future__ import annotations

import math

import pytest
import torch

from tether.advantages import (
    ADVANTAGES,
    compute_advantages,
    dr_grpo,
    gae,
    get_advantage,
    grpo,
    reinforce_baseline,
    reinforce_pp,
    reward_to_go,
    rloo,
    whiten_advantages,
)

# Two left-aligned responses of lengths 3 and 2 in A = 4 columns.
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def _random_batch(
    seed: int, rows: int = 6, width: int = 7
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """token_rewards, values (N, A) and a left-aligned mask with lengths 0..A (one empty row)."""
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.randn(rows, width, generator=generator, dtype=torch.float64)
    values = torch.randn(rows, width, generator=generator, dtype=torch.float64)
    lengths = torch.randint(1, width + 1, (rows,), generator=generator)
    lengths[0] = width
    lengths[1] = 0
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return rewards, values, mask


def _gae_loop(rewards, values, mask, gamma: float, lam: float) -> torch.Tensor:
    """Textbook GAE, one response at a time: δ_t = r_t + γV_{t+1} − V_t, Â_t = δ_t + γλÂ_{t+1}."""
    advantages = torch.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        length = int(mask[i].sum())
        running = 0.0
        for t in reversed(range(length)):
            next_value = float(values[i, t + 1]) if t + 1 < length else 0.0
            delta = float(rewards[i, t]) + gamma * next_value - float(values[i, t])
            running = delta + gamma * lam * running
            advantages[i, t] = running
    return advantages


def test_registry_names_and_lookup() -> None:
    assert set(ADVANTAGES) == {
        "reward_to_go",
        "gae",
        "reinforce_baseline",
        "rloo",
        "grpo",
        "dr_grpo",
        "reinforce_pp",
    }
    assert get_advantage("gae") is gae
    with pytest.raises(ValueError, match="did you mean 'grpo'"):
        get_advantage("gpro")


def test_compute_advantages_passes_only_declared_inputs() -> None:
    scores = torch.tensor([1.0, 0.0])
    inputs = {"scores": scores, "response_mask": MASK, "group_size": 2, "gamma": 0.9, "lam": 0.5}
    advantages, _ = compute_advantages("rloo", **inputs)
    torch.testing.assert_close(advantages, rloo(scores, MASK, 2)[0])
    with pytest.raises(TypeError, match="unknown advantage inputs"):
        compute_advantages("rloo", scores=scores, response_mask=MASK, group_size=2, gama=0.9)


def test_reward_to_go_hand_worked() -> None:
    # Row 0, γ = 0.5, rewards (1, 0, 2 | masked 7):
    #   G_2 = 2;  G_1 = 0 + 0.5·2 = 1;  G_0 = 1 + 0.5·1 = 1.5.  The masked 7 is ignored.
    # Row 1, rewards (0, 3 | masked 5, 5):
    #   G_1 = 3;  G_0 = 0 + 0.5·3 = 1.5.
    rewards = torch.tensor([[1.0, 0.0, 2.0, 7.0], [0.0, 3.0, 5.0, 5.0]])
    advantages, returns = reward_to_go(rewards, MASK, gamma=0.5)
    expected = torch.tensor([[1.5, 1.0, 2.0, 0.0], [1.5, 3.0, 0.0, 0.0]])
    torch.testing.assert_close(returns, expected)
    torch.testing.assert_close(advantages, expected)


def test_reward_to_go_undiscounted_is_reverse_cumsum() -> None:
    rewards, _, mask = _random_batch(seed=1)
    _, returns = reward_to_go(rewards, mask, gamma=1.0)
    masked = rewards * mask
    expected = masked.flip(-1).cumsum(-1).flip(-1) * mask
    torch.testing.assert_close(returns, expected)


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.8), (0.99, 1.0), (1.0, 0.0)])
def test_gae_matches_python_loop(gamma: float, lam: float) -> None:
    rewards, values, mask = _random_batch(seed=7)
    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)
    expected = _gae_loop(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values) * mask)
    assert torch.all(advantages[mask == 0] == 0)


def test_gae_lambda_one_is_reward_to_go_minus_value() -> None:
    rewards, values, mask = _random_batch(seed=3)
    advantages, _ = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    _, returns = reward_to_go(rewards, mask, gamma=0.9)
    torch.testing.assert_close(advantages, (returns - values) * mask)


def test_gae_skips_interior_masked_tokens() -> None:
    # A masked token in the middle behaves as if it were removed from the sequence.
    rewards = torch.tensor([[1.0, 9.0, 2.0]])
    values = torch.tensor([[0.5, 9.0, 0.25]])
    holed, _ = gae(rewards, values, torch.tensor([[1, 0, 1]]), gamma=0.9, lam=0.8)
    compact, _ = gae(rewards[:, [0, 2]], values[:, [0, 2]], torch.ones(1, 2), gamma=0.9, lam=0.8)
    torch.testing.assert_close(holed[:, [0, 2]], compact)
    assert holed[0, 1] == 0


def test_estimators_do_not_modify_inputs() -> None:
    rewards, values, mask = _random_batch(seed=5)
    scores = torch.randn(6, dtype=torch.float64)
    before = [tensor.clone() for tensor in (rewards, values, mask, scores)]
    gae(rewards, values, mask)
    reward_to_go(rewards, mask, gamma=0.9)
    reinforce_baseline(rewards, mask, baseline=0.3)
    reinforce_pp(rewards, mask)
    rloo(scores, mask, group_size=3)
    grpo(scores, mask, group_size=3)
    dr_grpo(scores, mask, group_size=3)
    for original, tensor in zip(before, (rewards, values, mask, scores)):
        assert torch.equal(original, tensor)


def test_reinforce_baseline_uses_incoming_baseline_then_updates() -> None:
    # Scores at the last token, γ = 1: row 0 returns (2, 2, 2), row 1 returns (-1, -1).
    rewards = torch.tensor([[0.0, 0.0, 2.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
    advantages, returns, baseline = reinforce_baseline(rewards, MASK, baseline=0.5, momentum=0.9)
    # A = G − 0.5 on real tokens.
    torch.testing.assert_close(advantages, torch.tensor([[1.5, 1.5, 1.5, 0.0], [-1.5, -1.5, 0.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[2.0, 2.0, 2.0, 0.0], [-1.0, -1.0, 0.0, 0.0]]))
    # b' = 0.9·0.5 + 0.1·mean(2, −1) = 0.45 + 0.05 = 0.5.
    torch.testing.assert_close(baseline, torch.tensor(0.5))
    _, _, baseline = reinforce_baseline(rewards, MASK, baseline=torch.tensor(0.0), momentum=0.5)
    torch.testing.assert_close(baseline, torch.tensor(0.25))  # 0.5·0 + 0.5·0.5


def test_rloo_hand_worked() -> None:
    # Group 1 (1, 0, 0, 1): baselines (1/3, 2/3, 2/3, 1/3) → A = (2/3, −2/3, −2/3, 2/3).
    # Group 2 (3, 1, 2, 2): baselines (5/3, 7/3, 2, 2)     → A = (4/3, −4/3, 0, 0).
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 1.0, 2.0, 2.0])
    mask = torch.ones(8, 3)
    mask[1, 2] = 0
    advantages, returns = rloo(scores, mask, group_size=4)
    expected = torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 4 / 3, -4 / 3, 0.0, 0.0])
    torch.testing.assert_close(advantages, expected[:, None] * mask)
    torch.testing.assert_close(returns, scores[:, None] * mask)
    # Equivalent form G/(G−1)·(r − mean).
    centred = scores.reshape(2, 4) - scores.reshape(2, 4).mean(1, keepdim=True)
    torch.testing.assert_close(advantages[:, 0], (4 / 3 * centred).reshape(-1))


def test_grpo_hand_worked() -> None:
    # (1, 0, 0, 1): mean 0.5, Bessel std sqrt(4·0.25/3) = 1/√3, A = ±0.5·√3 = ±0.8660.
    # (2, 2, 2, 2): all equal → A = 0, not NaN.
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    advantages, _ = grpo(scores, torch.ones(8, 2), group_size=4, eps=1e-12)
    half_root3 = 0.5 * math.sqrt(3.0)
    expected = torch.tensor([half_root3, -half_root3, -half_root3, half_root3, 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(advantages[:, 0], expected)
    torch.testing.assert_close(advantages[:, 1], expected)


def test_dr_grpo_hand_worked() -> None:
    # (1, 0, 0, 1) − 0.5 = (0.5, −0.5, −0.5, 0.5): no std scaling.
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]])
    advantages, _ = dr_grpo(scores, mask, group_size=4)
    expected = torch.tensor([[0.5, 0.5, 0.0], [-0.5, 0.0, 0.0], [-0.5, -0.5, -0.5], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(advantages, expected)


def test_group_size_must_divide_rows() -> None:
    with pytest.raises(ValueError, match="group_size"):
        grpo(torch.zeros(6), torch.ones(6, 2), group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        rloo(torch.zeros(4), torch.ones(4, 2), group_size=1)


def test_reinforce_pp_whitens_returns_over_the_batch() -> None:
    # γ = 1, score at the last token: returns row 0 = (2, 2, 2), row 1 = (−1, −1).
    # Over the 5 real tokens: mean = (6 − 2)/5 = 0.8, Bessel var = (3·1.2² + 2·1.8²)/4 = 2.7.
    rewards = torch.tensor([[0.0, 0.0, 2.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
    advantages, returns = reinforce_pp(rewards, MASK)
    std = math.sqrt(2.7)
    expected = torch.tensor([[1.2 / std] * 3 + [0.0], [-1.8 / std] * 2 + [0.0, 0.0]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, torch.tensor([[2.0, 2.0, 2.0, 0.0], [-1.0, -1.0, 0.0, 0.0]]))


def test_whiten_advantages_zero_mean_unit_std_on_mask() -> None:
    rewards, values, mask = _random_batch(seed=11)
    advantages, _ = gae(rewards, values, mask)
    whitened = whiten_advantages(advantages, mask)
    real = whitened[mask.bool()]
    assert abs(float(real.mean())) < 1e-5
    assert abs(float(real.std()) - 1.0) < 1e-4
    assert torch.all(whitened[mask == 0] == 0)
