"""KTO on a batch worked out by hand."""

import math

import torch

from tether.losses.unpaired import kto_loss, kto_reference_point


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def batch(requires_grad: bool = False) -> dict[str, torch.Tensor]:
    # implicit log-ratios r = policy - ref = [1, 0, -1, -2]; the first two are desirable.
    # mismatched-pair log-ratios [0.5, 0.1, -0.2, 0.4] average to 0.8 / 4 = 0.2 = z_ref.
    return {
        "policy_logps": torch.tensor([-5.0, -6.0, -7.0, -8.0], requires_grad=requires_grad),
        "ref_logps": torch.tensor([-6.0, -6.0, -6.0, -6.0]),
        "labels": torch.tensor([True, True, False, False]),
        "policy_kl_logps": torch.tensor([-9.5, -9.9, -10.2, -9.6], requires_grad=requires_grad),
        "ref_kl_logps": torch.tensor([-10.0, -10.0, -10.0, -10.0]),
    }


def test_hand_worked_batch():
    # beta = 0.5, lambda_D = 1, lambda_U = 1.5, z_ref = 0.2.
    # desirable   r = 1:  1 - σ(0.5 (1 - 0.2))  = 1 - σ(0.4)
    # desirable   r = 0:  1 - σ(0.5 (0 - 0.2))  = 1 - σ(-0.1)
    # undesirable r = -1: 1.5 (1 - σ(0.5 (0.2 + 1))) = 1.5 (1 - σ(0.6))
    # undesirable r = -2: 1.5 (1 - σ(0.5 (0.2 + 2))) = 1.5 (1 - σ(1.1))
    loss, metrics = kto_loss(**batch(), beta=0.5, desirable_weight=1.0, undesirable_weight=1.5)
    expected = [1 - sigmoid(0.4), 1 - sigmoid(-0.1), 1.5 * (1 - sigmoid(0.6)), 1.5 * (1 - sigmoid(1.1))]
    torch.testing.assert_close(loss, torch.tensor(expected))
    assert math.isclose(expected[0], 0.401312, abs_tol=1e-6)
    # rewards β r: desirable [0.5, 0] -> mean 0.25; undesirable [-0.5, -1] -> mean -0.75
    torch.testing.assert_close(metrics["rewards/chosen"], torch.tensor(0.25))
    torch.testing.assert_close(metrics["rewards/rejected"], torch.tensor(-0.75))
    torch.testing.assert_close(metrics["kl"], torch.tensor(0.2))
    torch.testing.assert_close(metrics["count/desirable"], torch.tensor(2.0))


def test_gradient_flows_through_rewards_not_reference_point():
    # d/dr [1 - σ(β(r - z))] = -β σ(β(r - z)) σ(-β(r - z)); for r = 1, β = 0.5, z = 0.2: -0.5 σ(0.4) σ(-0.4).
    # d/dr [1 - σ(β(z - r))] = +β σ(β(z - r)) σ(-β(z - r)); for r = -1: +0.5 σ(0.6) σ(-0.6), times λ_U = 1.
    inputs = batch(requires_grad=True)
    loss, _ = kto_loss(**inputs, beta=0.5)
    loss.sum().backward()
    grad = inputs["policy_logps"].grad
    torch.testing.assert_close(grad[0], torch.tensor(-0.5 * sigmoid(0.4) * sigmoid(-0.4)))
    torch.testing.assert_close(grad[2], torch.tensor(0.5 * sigmoid(0.6) * sigmoid(-0.6)))
    assert inputs["policy_kl_logps"].grad is None  # z_ref is detached


def test_reference_point_is_clamped_at_zero():
    # mismatched log-ratios [-1, -3] average to -2 < 0 -> z_ref = 0; a KL is never negative.
    z_ref = kto_reference_point(torch.tensor([-11.0, -13.0]), torch.tensor([-10.0, -10.0]))
    torch.testing.assert_close(z_ref, torch.tensor(0.0))
    # with z_ref = 0, beta = 1: desirable r = 1 -> 1 - σ(1); undesirable r = 1 -> 1 - σ(-1)
    loss, _ = kto_loss(
        policy_logps=torch.tensor([-1.0, -1.0]),
        ref_logps=torch.tensor([-2.0, -2.0]),
        labels=torch.tensor([True, False]),
        policy_kl_logps=torch.tensor([-11.0, -13.0]),
        ref_kl_logps=torch.tensor([-10.0, -10.0]),
        beta=1.0,
    )
    torch.testing.assert_close(loss, torch.tensor([1 - sigmoid(1.0), 1 - sigmoid(-1.0)]))


def test_batch_with_only_desirable_examples():
    inputs = batch()
    inputs["labels"] = torch.tensor([True, True, True, True])
    loss, metrics = kto_loss(**inputs, beta=0.5)
    assert loss.shape == (4,)
    torch.testing.assert_close(metrics["rewards/rejected"], torch.tensor(0.0))
    assert all(not value.requires_grad for value in metrics.values())
