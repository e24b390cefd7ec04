"""Bradley–Terry loss against values worked out by hand."""

import math

import torch

from tether.losses.reward import bradley_terry_loss


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_loss_and_metrics_match_hand_values():
    # Pair 1: r_w = 2.0, r_l = 1.0, difference +1 -> -log σ(1) = log(1 + e^-1) ≈ 0.313262.
    # Pair 2: r_w = 0.5, r_l = 1.5, difference -1 -> -log σ(-1) = log(1 + e) ≈ 1.313262.
    chosen = torch.tensor([2.0, 0.5])
    rejected = torch.tensor([1.0, 1.5])
    loss, metrics = bradley_terry_loss(chosen, rejected)
    expected = [math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(1.0))]
    torch.testing.assert_close(loss, torch.tensor(expected))
    assert math.isclose(expected[0], 0.313262, abs_tol=1e-6)
    # one of two pairs ranked right; margins +1 and -1 average to 0; reward means 1.25 and 1.25
    torch.testing.assert_close(metrics["rewards/accuracies"], torch.tensor(0.5))
    torch.testing.assert_close(metrics["rewards/margins"], torch.tensor(0.0))
    torch.testing.assert_close(metrics["rewards/chosen"], torch.tensor(1.25))
    torch.testing.assert_close(metrics["rewards/rejected"], torch.tensor(1.25))


def test_gradient_is_minus_sigmoid_of_the_wrong_way_margin():
    # d/dr_w [-log σ(r_w - r_l)] = -(1 - σ(r_w - r_l)) = -σ(r_l - r_w); d/dr_l = +σ(r_l - r_w).
    # Pair 1: σ(1 - 2) = σ(-1) = 1 / (1 + e) ≈ 0.268941.  Pair 2: σ(1.5 - 0.5) = σ(1) ≈ 0.731059.
    chosen = torch.tensor([2.0, 0.5], requires_grad=True)
    rejected = torch.tensor([1.0, 1.5], requires_grad=True)
    loss, _ = bradley_terry_loss(chosen, rejected)
    loss.sum().backward()
    wrong_way = torch.tensor([1 / (1 + math.exp(1.0)), 1 / (1 + math.exp(-1.0))])
    torch.testing.assert_close(chosen.grad, -wrong_way)
    torch.testing.assert_close(rejected.grad, wrong_way)


def test_margin_shifts_the_logit():
    # Llama 2 margin: -log σ(r_w - r_l - m). Pair 1: 1 - 0.5 = 0.5 -> log(1 + e^-0.5); pair 2: m = 0.
    chosen = torch.tensor([2.0, 0.5])
    rejected = torch.tensor([1.0, 1.5])
    loss, metrics = bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.5, 0.0]))
    expected = [math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(1.0))]
    torch.testing.assert_close(loss, torch.tensor(expected))
    # the reported margin is the reward difference itself, not the shifted logit
    torch.testing.assert_close(metrics["rewards/margins"], torch.tensor(0.0))


def test_centering_term_and_its_gradient():
    # c = 0.01. Pair 1: (2 + 1)^2 = 9 -> +0.09; pair 2: (0.5 + 1.5)^2 = 4 -> +0.04.
    # Gradient adds 2c(r_w + r_l) to both rewards: pair 1 +0.06, pair 2 +0.04.
    chosen = torch.tensor([2.0, 0.5], requires_grad=True)
    rejected = torch.tensor([1.0, 1.5], requires_grad=True)
    loss, _ = bradley_terry_loss(chosen, rejected, center_coef=0.01)
    expected = [math.log(1 + math.exp(-1.0)) + 0.09, math.log(1 + math.exp(1.0)) + 0.04]
    torch.testing.assert_close(loss, torch.tensor(expected))
    loss.sum().backward()
    torch.testing.assert_close(chosen.grad, torch.tensor([-sigmoid(-1.0) + 0.06, -sigmoid(1.0) + 0.04]))
    torch.testing.assert_close(rejected.grad, torch.tensor([sigmoid(-1.0) + 0.06, sigmoid(1.0) + 0.04]))


def test_weights_scale_each_pair():
    # A prompt ranked among K = 3 completions yields C(3, 2) = 3 pairs, each weighted 1/3, so the prompt
    # counts once. Three identical pairs with difference +1 and weight 1/3 sum to log(1 + e^-1).
    chosen = torch.tensor([2.0, 2.0, 2.0])
    rejected = torch.tensor([1.0, 1.0, 1.0])
    weights = torch.full((3,), 1.0 / 3.0)
    loss, _ = bradley_terry_loss(chosen, rejected, weights=weights)
    torch.testing.assert_close(loss.sum(), torch.tensor(math.log(1 + math.exp(-1.0))))


def test_metrics_are_detached_and_loss_is_per_pair():
    chosen = torch.tensor([2.0, 0.5, 0.0], requires_grad=True)
    rejected = torch.tensor([1.0, 1.5, 0.0], requires_grad=True)
    loss, metrics = bradley_terry_loss(chosen, rejected)
    assert loss.shape == (3,)
    assert all(not value.requires_grad for value in metrics.values())


def test_large_margins_stay_finite():
    # -log σ(-200) = 200 + log(1 + e^-200) ≈ 200; a naive log(sigmoid(x)) would give inf.
    loss, _ = bradley_terry_loss(torch.tensor([0.0]), torch.tensor([200.0]))
    torch.testing.assert_close(loss, torch.tensor([200.0]))
