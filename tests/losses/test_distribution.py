"""Distribution-matching losses (DPG, BRAIn) against hand-worked values, and a five-response bandit whose
target p* ∝ π_ref·exp(r/β) is known exactly: DPG, BRAIn and PPO on E[r] − β·KL(π ‖ π_ref) all land on it.

Letters: N rows, B prompts, G rows per prompt.

The hand-worked batch (one prompt, G = 2, β = 0.5):

    π_ref = [1/2, 1/4], r = [0, ½·log 3]        → r/β = [0, log 3]
    P = π_ref·exp(r/β) = [1/2, 3/4]             (unnormalised target)
    q = [1/4, 1/4]                              (the proposal the two responses were sampled from)
    w = P/q = [2, 3], Ẑ = mean w = 5/2, w̃ = w/Σw = [2/5, 3/5]
    π_θ = [1/2, 1/4]                            (the policy being trained)
"""

from __future__ import annotations

import math

import pytest
import torch

from tether.losses.distribution import (
    brain_loss,
    dpg_loss,
    estimate_divergences,
    should_update_proposal,
)
from tether.losses.policy import ppo_clip_loss
from tether.losses.preference import dpo_loss

BETA = 0.5


def hand_batch() -> dict[str, torch.Tensor]:
    return {
        "policy_logprobs": torch.tensor([0.5, 0.25], dtype=torch.float64).log().requires_grad_(True),
        "proposal_logprobs": torch.tensor([0.25, 0.25], dtype=torch.float64).log(),
        "ref_logprobs": torch.tensor([0.5, 0.25], dtype=torch.float64).log(),
        "rewards": torch.tensor([0.0, 0.5 * math.log(3.0)], dtype=torch.float64),
    }


def test_dpg_loss_hand_worked() -> None:
    # ℓ_i = −w̃_i·log π_θ(y_i) = [−0.4·log ½, −0.6·log ¼] = [0.4·0.693147, 0.6·1.386294] = [0.277259, 0.831777]
    # ∂ℓ_i/∂log π_θ(y_i) = −w̃_i = [−0.4, −0.6]
    # ESS = 1/(0.4² + 0.6²) = 1/0.52 = 1.923077; log Ẑ = log 2.5
    # KL(p* ‖ π_θ) estimate = −0.257123 (worked in test_divergence_estimates_and_update_rule_hand_worked)
    batch = hand_batch()
    loss, metrics = dpg_loss(**batch, beta=BETA)
    loss.sum().backward()
    torch.testing.assert_close(loss.detach(), torch.tensor([0.4 * math.log(2), 0.6 * math.log(4)]).double())
    torch.testing.assert_close(batch["policy_logprobs"].grad, torch.tensor([-0.4, -0.6]).double())
    assert metrics["distribution/ess"].item() == pytest.approx(1 / 0.52)
    assert metrics["distribution/ess_fraction"].item() == pytest.approx(1 / 0.52 / 2)
    assert metrics["distribution/max_weight"].item() == pytest.approx(0.6)
    assert metrics["distribution/log_partition"].item() == pytest.approx(math.log(2.5))
    assert metrics["distribution/kl_target_policy"].item() == pytest.approx(-0.257123, abs=1e-6)
    assert all(not value.requires_grad for value in metrics.values())


def test_dpg_weights_normalise_within_each_prompt() -> None:
    # Two prompts (G = 2). Prompt 1 is the hand batch (w̃ = [0.4, 0.6]); prompt 2 has log w = [0, log 4],
    # so w = [1, 4] → w̃ = [0.2, 0.8]. The large reward of prompt 2 must not drain weight from prompt 1.
    batch = hand_batch()
    second = {
        "policy_logprobs": torch.zeros(2, dtype=torch.float64),
        "proposal_logprobs": torch.zeros(2, dtype=torch.float64),
        "ref_logprobs": torch.zeros(2, dtype=torch.float64),
        "rewards": torch.tensor([0.0, BETA * math.log(4.0)], dtype=torch.float64),
    }
    joined = {
        key: torch.cat([batch[key].detach(), second[key]]).requires_grad_(key == "policy_logprobs")
        for key in batch
    }
    loss, metrics = dpg_loss(**joined, beta=BETA, group_size=2)
    loss.sum().backward()
    torch.testing.assert_close(
        joined["policy_logprobs"].grad, torch.tensor([-0.4, -0.6, -0.2, -0.8]).double()
    )
    # ESS averaged over prompts: (1/0.52 + 1/0.68) / 2
    assert metrics["distribution/ess"].item() == pytest.approx((1 / 0.52 + 1 / 0.68) / 2)
    with pytest.raises(ValueError, match="group_size"):
        dpg_loss(**joined, beta=BETA, group_size=3)


def test_dpg_log_space_weights_survive_huge_rewards() -> None:
    # r/β = [1000, 1000 + log 3]: exp overflows in fp32/fp64, the softmax of log-weights does not → w̃ = [1/4, 3/4].
    rewards = torch.tensor([500.0, 500.0 + 0.5 * math.log(3.0)])
    zeros = torch.zeros(2)
    loss, metrics = dpg_loss(zeros.clone().requires_grad_(True), zeros, zeros, rewards, beta=BETA)
    assert torch.isfinite(loss).all()
    # fp32 spacing near 1000 is 6e-5, so log 3 survives the subtraction only to ~1e-5
    assert metrics["distribution/max_weight"].item() == pytest.approx(0.75, abs=1e-4)


def test_brain_loss_hand_worked() -> None:
    # α̂ = w̃ = [0.4, 0.6]; β̂ = softmax(log π_θ − log q) = softmax([log 2, 0]) = [2/3, 1/3]
    # ℓ_i = −α̂_i·log β̂_i = [−0.4·log(2/3), −0.6·log(1/3)] = [0.4·0.405465, 0.6·1.098612] = [0.162186, 0.659167]
    # ∂(Σℓ)/∂log π_θ(y_i) = −(α̂_i − β̂_i) = [−(0.4 − 2/3), −(0.6 − 1/3)] = [+0.266667, −0.266667]
    # self-normalised KL(α̂ ‖ β̂) = 0.4·log(0.4/(2/3)) + 0.6·log(0.6/(1/3)) = −0.204330 + 0.352672 = 0.148342
    # ESS of β̂ = 1/((2/3)² + (1/3)²) = 1.8
    batch = hand_batch()
    loss, metrics = brain_loss(**batch, beta=BETA)
    loss.sum().backward()
    expected = torch.tensor([-0.4 * math.log(2 / 3), -0.6 * math.log(1 / 3)]).double()
    torch.testing.assert_close(loss.detach(), expected)
    torch.testing.assert_close(batch["policy_logprobs"].grad, torch.tensor([4 / 15, -4 / 15]).double())
    assert metrics["distribution/self_normalised_kl"].item() == pytest.approx(0.148342, abs=1e-6)
    assert metrics["distribution/policy_ess"].item() == pytest.approx(1.8)
    assert metrics["distribution/ess"].item() == pytest.approx(1 / 0.52)
    assert all(not value.requires_grad for value in metrics.values())


def test_brain_gradient_is_dpg_minus_self_normalised_baseline() -> None:
    # Random batch, 3 prompts × 4: ∇Σℓ_BRAIn = ∇Σℓ_DPG + Σ_i β̂_i ∇log π_θ(y_i), i.e. grad_brain = grad_dpg + β̂.
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(12, generator=generator, dtype=torch.float64) for _ in range(4)]
    policy = tensors[0].clone().requires_grad_(True)
    brain, _ = brain_loss(policy, tensors[1], tensors[2], tensors[3], beta=0.7, group_size=4)
    (grad_brain,) = torch.autograd.grad(brain.sum(), policy)
    dpg, _ = dpg_loss(policy, tensors[1], tensors[2], tensors[3], beta=0.7, group_size=4)
    (grad_dpg,) = torch.autograd.grad(dpg.sum(), policy)
    policy_weights = torch.softmax((tensors[0] - tensors[1]).reshape(3, 4), dim=-1).reshape(-1)
    torch.testing.assert_close(grad_brain, grad_dpg + policy_weights)
    # Each group's gradient sums to zero (Σ α̂ = Σ β̂ = 1): the baseline removes the common direction.
    torch.testing.assert_close(grad_brain.reshape(3, 4).sum(dim=-1), torch.zeros(3, dtype=torch.float64))


def test_brain_with_two_samples_and_hard_weights_is_dpo() -> None:
    # Pandey et al. 2024 §5: G = 2, q = π_ref, α̂ → one-hot on the higher reward (β → 0) gives −log σ(Δ_w − Δ_l), DPO
    # with β = 1. Here r/β = [1000, 0] so α̂ = [1, e^−1000] = [1, 0].
    policy = torch.tensor([-3.0, -2.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-3.5, -1.0], dtype=torch.float64)
    loss, _ = brain_loss(policy, ref, ref, torch.tensor([1.0, 0.0], dtype=torch.float64), beta=1e-3)
    (grad_brain,) = torch.autograd.grad(loss.sum(), policy)
    dpo, _ = dpo_loss(
        policy_chosen_logps=policy[:1],
        policy_rejected_logps=policy[1:],
        ref_chosen_logps=ref[:1],
        ref_rejected_logps=ref[1:],
        beta=1.0,
    )
    (grad_dpo,) = torch.autograd.grad(dpo.sum(), policy)
    # Δ_w − Δ_l = (−3 + 3.5) − (−2 + 1) = 1.5 → −log σ(1.5) = 0.201413
    assert loss.sum().item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))))
    assert loss.sum().item() == pytest.approx(dpo.item())
    torch.testing.assert_close(grad_brain, grad_dpo)


def test_divergence_estimates_and_update_rule_hand_worked() -> None:
    # From samples of q: w = [2, 3], Ẑ = 2.5, p*/q ≈ w/Ẑ = [0.8, 1.2], π_θ/q = [2, 1], w̃ = [0.4, 0.6]
    #   KL(p* ‖ q)   ≈ Σ w̃ log(w/Ẑ)          = 0.4·log 0.8 + 0.6·log 1.2 = −0.089257 + 0.109393 = 0.020136
    #   KL(p* ‖ π_θ) ≈ Σ w̃ log((w/Ẑ)/(π_θ/q)) = 0.4·log 0.4 + 0.6·log 1.2 = −0.366516 + 0.109393 = −0.257123
    #   TVD(p*, q)   ≈ ½ mean |1 − w/Ẑ|       = ½·(0.2 + 0.2)/2 = 0.1
    #   TVD(p*, π_θ) ≈ ½ mean |π_θ/q − w/Ẑ|   = ½·(1.2 + 0.2)/2 = 0.35
    # On two samples the criteria disagree: the KL rule replaces q, the TVD rule keeps it.
    batch = {key: value.detach() for key, value in hand_batch().items()}
    divergences = estimate_divergences(**batch, beta=BETA)
    assert divergences["kl_target_proposal"].item() == pytest.approx(0.020136, abs=1e-6)
    assert divergences["kl_target_policy"].item() == pytest.approx(-0.257123, abs=1e-6)
    assert divergences["tvd_target_proposal"].item() == pytest.approx(0.1)
    assert divergences["tvd_target_policy"].item() == pytest.approx(0.35)
    assert should_update_proposal(**batch, beta=BETA, criterion="kl")[0] is True
    assert should_update_proposal(**batch, beta=BETA, criterion="tvd")[0] is False
    # A policy must also beat the best earlier proposal when one is given.
    assert should_update_proposal(**batch, beta=BETA, criterion="kl", best_divergence=-0.3)[0] is False
    with pytest.raises(ValueError, match="criterion"):
        should_update_proposal(**batch, beta=BETA, criterion="js")


def test_inputs_untouched_and_bad_arguments_rejected() -> None:
    batch = hand_batch()
    before = {key: value.detach().clone() for key, value in batch.items()}
    for loss_fn in (dpg_loss, brain_loss):
        loss_fn(**batch, beta=BETA)
        with pytest.raises(ValueError, match="beta"):
            loss_fn(**batch, beta=0.0)
        with pytest.raises(ValueError, match="shape"):
            loss_fn(**{key: value[None] for key, value in batch.items()}, beta=BETA)
    for key, value in batch.items():
        torch.testing.assert_close(value.detach(), before[key])


# ---------------------------------------------------------------------------------------------------------
# a five-response bandit with a known target: p* ∝ π_ref·exp(r/β)
#
#   π_ref = [0.30, 0.25, 0.20, 0.15, 0.10], r = [1, 0.5, 0, −0.5, 2], β = 0.5
#   π_ref·exp(r/β) = [0.30e², 0.25e, 0.20, 0.15e⁻¹, 0.10e⁴] = [2.2167, 0.6796, 0.2000, 0.0552, 5.4598], Z = 8.6113
#   p* = [0.2574, 0.0789, 0.0232, 0.0064, 0.6340];  KL(p* ‖ π_ref) = 0.970 at the start of training.

TOY_REF = torch.tensor([0.30, 0.25, 0.20, 0.15, 0.10], dtype=torch.float64)
TOY_REWARDS = torch.tensor([1.0, 0.5, 0.0, -0.5, 2.0], dtype=torch.float64)
TOY_BETA = 0.5
TOY_TARGET = torch.softmax(TOY_REF.log() + TOY_REWARDS / TOY_BETA, dim=0)


def kl_to_target(logits: torch.Tensor) -> float:
    """Exact KL(p* ‖ softmax(logits)) by enumeration."""
    return (TOY_TARGET * (TOY_TARGET.log() - torch.log_softmax(logits.detach(), dim=0))).sum().item()


def make_optimiser(steps: int, lr: float) -> tuple[torch.Tensor, torch.optim.Optimizer, object]:
    """Logits initialised to log π_ref; Adam with a linear decay to zero so the Monte-Carlo noise anneals."""
    logits = TOY_REF.log().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - step / steps)
    return logits, optimiser, schedule


def test_toy_target_is_known() -> None:
    torch.testing.assert_close(
        TOY_TARGET,
        torch.tensor([0.2574, 0.0789, 0.0232, 0.0064, 0.6340], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
    assert kl_to_target(TOY_REF.log()) == pytest.approx(0.970, abs=1e-3)


@pytest.mark.parametrize("loss_fn", [dpg_loss, brain_loss], ids=["dpg", "brain"])
def test_on_policy_training_matches_target(loss_fn) -> None:
    # 200 Adam steps, each on G = 64 samples of the one prompt from the detached policy (B = 1, so the loss is the
    # sum over rows). One group keeps the tensors (1, G): a (B, G) softmax with B > 1 this small pays a thread
    # hand-off per call on a busy 2-core machine, and several groups are already covered by the tests above.
    steps, group_size = 200, 64
    generator = torch.Generator().manual_seed(0)
    logits, optimiser, schedule = make_optimiser(steps, lr=0.1)
    for _ in range(steps):
        logprobs = torch.log_softmax(logits, dim=0)  # (5,)
        actions = torch.multinomial(
            logprobs.detach().exp(), group_size, replacement=True, generator=generator
        )
        sampled = logprobs[actions]  # (N,)
        loss, metrics = loss_fn(
            sampled,
            sampled.detach(),
            TOY_REF.log()[actions],
            TOY_REWARDS[actions],
            TOY_BETA,
            group_size=group_size,
        )
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()
        schedule.step()
    assert kl_to_target(logits) < 0.01
    # Near p* the on-policy weights are nearly flat: the proposal has become the target.
    assert metrics["distribution/ess_fraction"].item() > 0.9


@pytest.mark.parametrize("criterion", ["kl", "tvd"])
def test_off_policy_dpg_with_proposal_updates_matches_target(criterion: str) -> None:
    # q starts at π_ref (offline); every 10 steps a fresh batch of 256 from q decides whether q ← π_θ.
    steps, num_samples = 300, 64
    generator = torch.Generator().manual_seed(0)
    logits, optimiser, schedule = make_optimiser(steps, lr=0.1)
    proposal_logits = TOY_REF.log().clone()
    best, updates = None, 0
    for step in range(steps):
        proposal = torch.log_softmax(proposal_logits, dim=0)
        actions = torch.multinomial(proposal.exp(), num_samples, replacement=True, generator=generator)
        loss, _ = dpg_loss(
            torch.log_softmax(logits, dim=0)[actions],
            proposal[actions],
            TOY_REF.log()[actions],
            TOY_REWARDS[actions],
            TOY_BETA,
        )
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()
        schedule.step()
        if (step + 1) % 10 == 0:
            actions = torch.multinomial(proposal.exp(), 256, replacement=True, generator=generator)
            update, divergences = should_update_proposal(
                torch.log_softmax(logits.detach(), dim=0)[actions],
                proposal[actions],
                TOY_REF.log()[actions],
                TOY_REWARDS[actions],
                TOY_BETA,
                criterion=criterion,
                best_divergence=best,
            )
            if update:
                proposal_logits = logits.detach().clone()
                best = divergences[f"{criterion}_target_policy"].item()
                updates += 1
    assert updates >= 2
    assert kl_to_target(logits) < 0.01
    assert kl_to_target(proposal_logits) < kl_to_target(TOY_REF.log())


def test_kl_regularised_objective_optimum_is_target_exact_gradient() -> None:
    # max_π E_π[r] − β·KL(π ‖ π_ref), by enumeration over the five responses: the maximiser is p*.
    logits, optimiser, _ = make_optimiser(300, lr=0.1)
    for _ in range(300):
        logprobs = torch.log_softmax(logits, dim=0)
        probs = logprobs.exp()
        objective = (probs * TOY_REWARDS).sum() - TOY_BETA * (probs * (logprobs - TOY_REF.log())).sum()
        optimiser.zero_grad()
        (-objective).backward()
        optimiser.step()
    assert kl_to_target(logits) < 1e-4


def test_ppo_with_kl_shaped_reward_converges_to_target() -> None:
    # PPO-clip on sampled actions with the shaped reward r − β·(log π_old − log π_ref) and a batch-mean baseline: the
    # shaped reward's policy gradient is that of E_π[r] − β·KL(π ‖ π_ref) (the −β·E_π[∇log π] term vanishes).
    steps, num_samples = 300, 64
    generator = torch.Generator().manual_seed(0)
    logits, optimiser, schedule = make_optimiser(steps, lr=0.1)
    for _ in range(steps):
        old_logprobs = torch.log_softmax(logits.detach(), dim=0)
        actions = torch.multinomial(old_logprobs.exp(), num_samples, replacement=True, generator=generator)
        shaped = TOY_REWARDS[actions] - TOY_BETA * (old_logprobs[actions] - TOY_REF.log()[actions])  # (N,)
        advantages = (shaped - shaped.mean())[:, None]  # (N, 1)
        logprobs = torch.log_softmax(logits, dim=0)[actions][:, None]  # (N, 1)
        loss, _ = ppo_clip_loss(
            logprobs, old_logprobs[actions][:, None], advantages, torch.ones_like(advantages)
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    assert kl_to_target(logits) < 0.01
