"""Every registered preference loss against values worked out by hand, plus the registry and combination.

The shared batch has two pairs, β = 0.5:

    pair A: log π(y_w) = -10, log π(y_l) = -12, log π_ref(y_w) = log π_ref(y_l) = -11
            -> Δ_w = +1, Δ_l = -1, h = Δ_w - Δ_l = +2, β·Δ_w = +0.5, β·Δ_l = -0.5, β·h = +1
    pair B: the same with chosen and rejected swapped
            -> Δ_w = -1, Δ_l = +1, h = -2, β·Δ_w = -0.5, β·Δ_l = +0.5, β·h = -1

Lengths |y_w| = [4, 8], |y_l| = [6, 5], so the per-token log-probs are
    A: -10/4 = -2.5 (chosen), -12/6 = -2.0 (rejected);  B: -12/8 = -1.5 (chosen), -10/5 = -2.0 (rejected).
"""

import math

import pytest
import torch

from tether.losses.preference import (
    PREFERENCE_LOSSES,
    combined_preference_loss,
    get_preference_loss,
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def log_sigmoid(x: float) -> float:
    return -math.log(1.0 + math.exp(-x))


def log_odds(mean_logp: float) -> float:
    # log(p / (1 - p)) with p = exp(mean_logp)
    return mean_logp - math.log(1.0 - math.exp(mean_logp))


def batch(requires_grad: bool = False) -> dict[str, torch.Tensor]:
    return {
        "policy_chosen_logps": torch.tensor([-10.0, -12.0], requires_grad=requires_grad),
        "policy_rejected_logps": torch.tensor([-12.0, -10.0], requires_grad=requires_grad),
        "ref_chosen_logps": torch.tensor([-11.0, -11.0]),
        "ref_rejected_logps": torch.tensor([-11.0, -11.0]),
        "chosen_lengths": torch.tensor([4, 8]),
        "rejected_lengths": torch.tensor([6, 5]),
    }


ANCHORED = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def inputs(names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    full = batch()
    return {name: full[name] for name in names}


eps = 0.1
tiny = 1e-3
HAND_WORKED = {
    # -log σ(βh)
    "dpo": ({"beta": 0.5}, ANCHORED, [-log_sigmoid(1.0), -log_sigmoid(-1.0)]),
    # -(1 - ε) log σ(βh) - ε log σ(-βh), ε = 0.1
    "cdpo": (
        {"beta": 0.5, "label_smoothing": eps},
        ANCHORED,
        [
            -(1 - eps) * log_sigmoid(1.0) - eps * log_sigmoid(-1.0),
            -(1 - eps) * log_sigmoid(-1.0) - eps * log_sigmoid(1.0),
        ],
    ),
    # [(1 - ε)(-log σ(βh)) - ε(-log σ(-βh))] / (1 - 2ε), ε = 0.1
    "robust": (
        {"beta": 0.5, "label_smoothing": eps},
        ANCHORED,
        [
            ((1 - eps) * -log_sigmoid(1.0) - eps * -log_sigmoid(-1.0)) / (1 - 2 * eps),
            ((1 - eps) * -log_sigmoid(-1.0) - eps * -log_sigmoid(1.0)) / (1 - 2 * eps),
        ],
    ),
    # (h - 1/(2β))^2 with 1/(2β) = 1: (2 - 1)^2 = 1, (-2 - 1)^2 = 9
    "ipo": ({"beta": 0.5}, ANCHORED, [1.0, 9.0]),
    # max(0, 1 - βh): max(0, 0) = 0, max(0, 2) = 2
    "hinge": ({"beta": 0.5}, ANCHORED, [0.0, 2.0]),
    # q_w (log q_w - log(1 - ε)) + q_l (log q_l - log ε), q_w = σ(βh), ε = 1e-3
    "exo_pair": (
        {"beta": 0.5, "label_smoothing": tiny},
        ANCHORED,
        [
            sigmoid(1.0) * (math.log(sigmoid(1.0)) - math.log(1 - tiny))
            + sigmoid(-1.0) * (math.log(sigmoid(-1.0)) - math.log(tiny)),
            sigmoid(-1.0) * (math.log(sigmoid(-1.0)) - math.log(1 - tiny))
            + sigmoid(1.0) * (math.log(sigmoid(1.0)) - math.log(tiny)),
        ],
    ),
    # -log σ(r_w) - ½ log σ(-r_w) - ½ log σ(-r_l); A: r_w = 0.5, r_l = -0.5; B: r_w = -0.5, r_l = 0.5
    "nca_pair": (
        {"beta": 0.5},
        ANCHORED,
        [
            -log_sigmoid(0.5) - 0.5 * log_sigmoid(-0.5) - 0.5 * log_sigmoid(0.5),
            -log_sigmoid(-0.5) - 0.5 * log_sigmoid(0.5) - 0.5 * log_sigmoid(-0.5),
        ],
    ),
    # -log σ(r_w - δ) - log σ(-(r_l - δ)), δ = 0.25
    # A: r_w - δ = 0.25, -(r_l - δ) = 0.75;  B: r_w - δ = -0.75, -(r_l - δ) = -0.25
    "bco_pair": (
        {"beta": 0.5, "reward_shift": 0.25},
        ANCHORED,
        [-log_sigmoid(0.25) - log_sigmoid(0.75), -log_sigmoid(-0.75) - log_sigmoid(-0.25)],
    ),
    # (Δ_w - 1/(2β))^2 + (Δ_l + 1/(2β))^2 with 1/(2β) = 1: A: 0 + 0; B: (-2)^2 + 2^2 = 8
    "sppo_hard": ({"beta": 0.5}, ANCHORED, [0.0, 8.0]),
    # (1 - σ(r_w)) + σ(r_l)
    "apo_zero": (
        {"beta": 0.5},
        ANCHORED,
        [(1 - sigmoid(0.5)) + sigmoid(-0.5), (1 - sigmoid(-0.5)) + sigmoid(0.5)],
    ),
    # σ(r_w) + (1 - σ(r_w - r_l))
    "apo_down": (
        {"beta": 0.5},
        ANCHORED,
        [sigmoid(0.5) + (1 - sigmoid(1.0)), sigmoid(-0.5) + (1 - sigmoid(-1.0))],
    ),
    # -log σ(β·mean_w - β·mean_l - γ), β = 2, γ = 1
    # A: 2(-2.5) - 2(-2.0) - 1 = -2;  B: 2(-1.5) - 2(-2.0) - 1 = 0 -> log 2
    "simpo": (
        {"beta": 2.0, "gamma": 1.0},
        ("policy_chosen_logps", "policy_rejected_logps", "chosen_lengths", "rejected_lengths"),
        [-log_sigmoid(-2.0), math.log(2.0)],
    ),
    # -mean_w + λ · -log σ(log odds(mean_w) - log odds(mean_l)), λ = 0.1
    "orpo": (
        {"orpo_lambda": 0.1},
        ("policy_chosen_logps", "policy_rejected_logps", "chosen_lengths", "rejected_lengths"),
        [
            2.5 + 0.1 * -log_sigmoid(log_odds(-2.5) - log_odds(-2.0)),
            1.5 + 0.1 * -log_sigmoid(log_odds(-1.5) - log_odds(-2.0)),
        ],
    ),
    # -log σ(β(log π_w - log π_l)) - mean_w; A: β·2 = 1, nll 2.5; B: β·(-2) = -1, nll 1.5
    "cpo": (
        {"beta": 0.5},
        ("policy_chosen_logps", "policy_rejected_logps", "chosen_lengths"),
        [-log_sigmoid(1.0) + 2.5, -log_sigmoid(-1.0) + 1.5],
    ),
    # -log π(y_w) / |y_w|: 10/4, 12/8
    "nll": ({}, ("policy_chosen_logps", "chosen_lengths"), [2.5, 1.5]),
    # DPO + α·NLL with α = 0.5
    "rpo": (
        {"beta": 0.5, "rpo_alpha": 0.5},
        (*ANCHORED, "chosen_lengths"),
        [-log_sigmoid(1.0) + 0.5 * 2.5, -log_sigmoid(-1.0) + 0.5 * 1.5],
    ),
}


def test_every_registered_loss_has_a_hand_worked_value():
    assert set(PREFERENCE_LOSSES) == set(HAND_WORKED)


@pytest.mark.parametrize("name", sorted(HAND_WORKED))
def test_loss_matches_hand_value(name):
    floats, tensor_names, expected = HAND_WORKED[name]
    loss, metrics = get_preference_loss(name)(**inputs(tensor_names), **floats)
    assert loss.shape == (2,)
    torch.testing.assert_close(loss, torch.tensor(expected))
    assert metrics and all(not value.requires_grad and value.dim() == 0 for value in metrics.values())


def test_hand_values_are_what_the_comments_say():
    # a few spot checks of the arithmetic itself
    assert math.isclose(-log_sigmoid(1.0), math.log(1 + math.exp(-1.0)))
    assert math.isclose(-log_sigmoid(1.0), 0.313262, abs_tol=1e-6)
    assert math.isclose(-log_sigmoid(-1.0), 1.313262, abs_tol=1e-6)


def test_dpo_gradient_is_the_lecture_form():
    # ∇L = -β σ(r̂_l - r̂_w) [∇log π(y_w) - ∇log π(y_l)], r̂ = β Δ.
    # A: r̂_l - r̂_w = -0.5 - 0.5 = -1 -> d/dlogπ_w = -0.5 σ(-1) ≈ -0.134470, d/dlogπ_l = +0.134470.
    # B: r̂_l - r̂_w = 0.5 + 0.5 = +1 -> d/dlogπ_w = -0.5 σ(1) ≈ -0.365529, d/dlogπ_l = +0.365529.
    tensors = batch(requires_grad=True)
    loss, _ = get_preference_loss("dpo")(**{name: tensors[name] for name in ANCHORED}, beta=0.5)
    loss.sum().backward()
    weight = torch.tensor([0.5 * sigmoid(-1.0), 0.5 * sigmoid(1.0)])
    torch.testing.assert_close(tensors["policy_chosen_logps"].grad, -weight)
    torch.testing.assert_close(tensors["policy_rejected_logps"].grad, weight)
    assert math.isclose(0.5 * sigmoid(-1.0), 0.134470, abs_tol=1e-6)


def test_dpo_metrics():
    # pair A only: r̂_w = 0.5, r̂_l = -0.5, margin 1, ranked right
    _, metrics = get_preference_loss("dpo")(
        policy_chosen_logps=torch.tensor([-10.0]),
        policy_rejected_logps=torch.tensor([-12.0]),
        ref_chosen_logps=torch.tensor([-11.0]),
        ref_rejected_logps=torch.tensor([-11.0]),
        beta=0.5,
    )
    torch.testing.assert_close(metrics["rewards/chosen"], torch.tensor(0.5))
    torch.testing.assert_close(metrics["rewards/rejected"], torch.tensor(-0.5))
    torch.testing.assert_close(metrics["rewards/margins"], torch.tensor(1.0))
    torch.testing.assert_close(metrics["rewards/accuracies"], torch.tensor(1.0))


def test_dpo_reference_free_and_anchored_differ():
    # log π = (-10, -12), log π_ref = (-11, -13): anchored h = (1) - (1) = 0 -> log 2;
    # reference-free h = -10 + 12 = 2, β = 0.5 -> -log σ(1).
    dpo = get_preference_loss("dpo")
    policy = {"policy_chosen_logps": torch.tensor([-10.0]), "policy_rejected_logps": torch.tensor([-12.0])}
    anchored, _ = dpo(
        **policy, ref_chosen_logps=torch.tensor([-11.0]), ref_rejected_logps=torch.tensor([-13.0]), beta=0.5
    )
    free, _ = dpo(**policy, beta=0.5)
    torch.testing.assert_close(anchored, torch.tensor([math.log(2.0)]))
    torch.testing.assert_close(free, torch.tensor([-log_sigmoid(1.0)]))


def test_ipo_length_normalised():
    # per-token log-ratios: A: Δ_w = 1/4, Δ_l = -1/6, h = 5/12 -> (5/12 - 1)^2 = (7/12)^2
    #                       B: Δ_w = -1/8, Δ_l = 1/5, h = -13/40 -> (-13/40 - 1)^2 = (53/40)^2
    loss, _ = get_preference_loss("ipo")(**batch(), beta=0.5)
    torch.testing.assert_close(loss, torch.tensor([(7 / 12) ** 2, (53 / 40) ** 2]))


def test_cdpo_and_robust_reduce_to_dpo_without_noise():
    dpo, _ = get_preference_loss("dpo")(**inputs(ANCHORED), beta=0.5)
    for name in ("cdpo", "robust"):
        loss, _ = get_preference_loss(name)(**inputs(ANCHORED), beta=0.5, label_smoothing=0.0)
        torch.testing.assert_close(loss, dpo)


def test_combination_with_weights():
    # 1.0·DPO + 0.5·NLL: A: -log σ(1) + 0.5·2.5; B: -log σ(-1) + 0.5·1.5 (the same numbers as RPO, α = 0.5)
    loss, metrics = combined_preference_loss(
        {"dpo": 1.0, "nll": 0.5}, **batch(), beta=0.5, label_smoothing=0.0
    )
    torch.testing.assert_close(loss, torch.tensor([-log_sigmoid(1.0) + 1.25, -log_sigmoid(-1.0) + 0.75]))
    torch.testing.assert_close(metrics["nll/loss"], torch.tensor((2.5 + 1.5) / 2))
    torch.testing.assert_close(metrics["dpo/rewards/margins"], torch.tensor(0.0))
    assert "nll/nll" in metrics and "dpo/loss" in metrics


def test_combination_sums_three_losses():
    # MPO-style 0.8·DPO + 0.2·BCO + 1.0·NLL, δ = 0: A: BCO = -log σ(0.5) - log σ(0.5)
    loss, _ = combined_preference_loss({"dpo": 0.8, "bco_pair": 0.2, "nll": 1.0}, **batch(), beta=0.5)
    expected_a = 0.8 * -log_sigmoid(1.0) + 0.2 * -2 * log_sigmoid(0.5) + 2.5
    expected_b = 0.8 * -log_sigmoid(-1.0) + 0.2 * -2 * log_sigmoid(-0.5) + 1.5
    torch.testing.assert_close(loss, torch.tensor([expected_a, expected_b]))


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(
        ValueError,
        match=r"unknown preference loss 'dpoo'; did you mean 'dpo'\? \(choose from apo_down, apo_zero",
    ):
        get_preference_loss("dpoo")
    with pytest.raises(ValueError, match="simpo"):
        combined_preference_loss({"dpo": 1.0, "sigmoid": 1.0}, **batch())


def test_unknown_argument_is_an_error():
    with pytest.raises(ValueError, match="betta"):
        combined_preference_loss({"dpo": 1.0}, **batch(), betta=0.5)


def test_label_smoothing_out_of_range():
    with pytest.raises(ValueError, match="robust"):
        get_preference_loss("robust")(**inputs(ANCHORED), label_smoothing=0.5)
    with pytest.raises(ValueError, match="exo_pair"):
        get_preference_loss("exo_pair")(**inputs(ANCHORED), label_smoothing=0.0)


def test_large_logits_stay_finite():
    # β·h = -400: -log σ(-400) = 400 exactly in float32, where log(sigmoid(·)) would be inf.
    loss, _ = get_preference_loss("dpo")(
        policy_chosen_logps=torch.tensor([-900.0]),
        policy_rejected_logps=torch.tensor([-100.0]),
        beta=0.5,
    )
    torch.testing.assert_close(loss, torch.tensor([400.0]))


def test_orpo_near_certain_response_is_finite():
    # a chosen response with probability ~1 (mean log-prob 0) must not give infinite odds
    loss, _ = get_preference_loss("orpo")(
        policy_chosen_logps=torch.tensor([0.0]),
        policy_rejected_logps=torch.tensor([-3.0]),
        chosen_lengths=torch.tensor([3]),
        rejected_lengths=torch.tensor([3]),
    )
    assert torch.isfinite(loss).all()
