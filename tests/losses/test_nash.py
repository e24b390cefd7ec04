"""Nash-MD (Munos et al. 2023) against hand-worked values and a non-transitive rock–paper–scissors toy.

Letters: N rows, K = 3 responses. The toy's preference table is cyclic — 0 ≻ 1, 1 ≻ 2, 2 ≻ 0, each with
probability 0.9 — so no scalar reward ranks it; its Nash equilibrium is uniform, and with a uniform
reference the KL-regularised equilibrium π*_τ is uniform too (by symmetry). Policies are softmax(θ) over
the K responses, trained by plain SGD (Adam's normalised steps keep orbiting the equilibrium of this
rotational game at the size of the learning rate). "Exact" runs average the per-sample loss over all
K × K pairs (y, y') with weights π(y) · π'(y') — the expected update, free of sampling noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from tether.losses.nash import (
    geometric_mixture_logits,
    nash_md_loss,
    preference_from_matrix,
    preference_from_rewards,
)
from tether.losses.policy import reinforce_loss
from tether.losses.reward import bradley_terry_loss

K = 3
ROCK_PAPER_SCISSORS = torch.tensor(
    [
        [0.5, 0.9, 0.1],  # 0 beats 1, loses to 2
        [0.1, 0.5, 0.9],  # 1 beats 2, loses to 0
        [0.9, 0.1, 0.5],  # 2 beats 0, loses to 1
    ],
    dtype=torch.float64,
)
UNIFORM_LOGPROBS = torch.full((K,), -math.log(K), dtype=torch.float64)
START_LOGITS = (2.0, 0.0, -1.0)  # π ≈ (0.84, 0.11, 0.04): far from the equilibrium
TOLERANCE = 0.05  # max_i |π_i − 1/3| counted as "at the mixed Nash equilibrium"

# All K × K (y, y') pairs, for exact expectations.
PAIR_Y = torch.arange(K).repeat_interleave(K)
PAIR_Y_OPP = torch.arange(K).repeat(K)

# An opponent rule: (detached policy logits (K,), step, probs of every earlier iterate) -> opponent (K,).
Opponent = Callable[[torch.Tensor, int, list[torch.Tensor]], torch.Tensor]


def distance_to_uniform(probs: torch.Tensor) -> float:
    return (probs - 1.0 / K).abs().max().item()


def geometric_opponent(ref_logprobs: torch.Tensor, mixture_coef: float) -> Opponent:
    """Nash-MD-PG's opponent π_θ^β ∝ π_θ^{1−β} μ^β."""
    return lambda logits, step, history: geometric_mixture_logits(logits, ref_logprobs, mixture_coef).exp()


def past_mixture_opponent(logits: torch.Tensor, step: int, history: list[torch.Tensor]) -> torch.Tensor:
    """Fictitious self-play: the uniform mixture of all policies so far, the current one included."""
    return torch.stack([*history, torch.softmax(logits, -1)]).mean(0)


def train(
    opponent: Opponent,
    kl_coef: float,
    lr: float,
    steps: int,
    batch: int | None = None,
    ref_logprobs: torch.Tensor = UNIFORM_LOGPROBS,
    preference_matrix: torch.Tensor = ROCK_PAPER_SCISSORS,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SGD on softmax logits with ``nash_md_loss``: y ~ π_θ, y' ~ opponent, P(y ≻ y') from the table.

    ``batch=None`` takes the exact expected update. Returns the final probs (K,) and every iterate (steps, K).
    """
    generator = torch.Generator().manual_seed(seed)
    logits = torch.tensor(START_LOGITS, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=lr)
    history: list[torch.Tensor] = []
    for step in range(steps):
        opponent_probs = opponent(logits.detach(), step, history).double()  # (K,)
        logprobs = torch.log_softmax(logits, dim=-1)  # (K,)
        if batch is None:
            responses, opponent_responses = PAIR_Y, PAIR_Y_OPP
            weights = logprobs.detach().exp()[responses] * opponent_probs[opponent_responses]  # (K·K,)
        else:
            responses = torch.multinomial(logprobs.detach().exp(), batch, True, generator=generator)
            opponent_responses = torch.multinomial(opponent_probs, batch, True, generator=generator)
            weights = torch.full((batch,), 1.0 / batch, dtype=torch.float64)
        preference = preference_from_matrix(preference_matrix, responses, opponent_responses)
        loss, _ = nash_md_loss(logprobs[responses], preference, ref_logprobs[responses], kl_coef)
        optimizer.zero_grad()
        (weights * loss).sum().backward()
        optimizer.step()
        history.append(torch.softmax(logits.detach(), -1))
    return history[-1], torch.stack(history)


# --- geometric mixture ----------------------------------------------------------------------------------


def test_geometric_mixture_matches_closed_form() -> None:
    # π = (0.5, 0.3, 0.2), μ = (0.2, 0.3, 0.5), β = 1/2: π^β ∝ √(π μ) = (√0.1, √0.09, √0.1)
    #   = (0.316228, 0.3, 0.316228), Z = 0.932456 → (0.339134, 0.321731, 0.339134).
    # β = 1/4: π^{3/4} μ^{1/4} normalised → (0.418951, 0.316082, 0.264968).
    policy = torch.tensor([0.5, 0.3, 0.2])
    ref = torch.tensor([0.2, 0.3, 0.5])
    half = geometric_mixture_logits(policy.log() + 7.0, ref.log() - 3.0, 0.5)  # offsets cancel
    torch.testing.assert_close(half.exp(), torch.tensor([0.339134, 0.321731, 0.339134]), atol=1e-6, rtol=0)
    quarter = geometric_mixture_logits(policy.log(), ref.log(), 0.25)
    torch.testing.assert_close(quarter.exp(), torch.tensor([0.418951, 0.316082, 0.264968]), atol=1e-6, rtol=0)
    assert half.dtype == torch.float32
    torch.testing.assert_close(torch.logsumexp(half, -1), torch.tensor(0.0))


def test_geometric_mixture_endpoints_and_per_token_shape() -> None:
    # β = 0 is self-play (the policy itself), β = 1 the reference; per-token (B, T, V) logits mix row by row.
    generator = torch.Generator().manual_seed(0)
    policy_logits = torch.randn(2, 4, 5, generator=generator)
    ref_logits = torch.randn(2, 4, 5, generator=generator)
    policy_before, ref_before = policy_logits.clone(), ref_logits.clone()
    torch.testing.assert_close(
        geometric_mixture_logits(policy_logits, ref_logits, 0.0), torch.log_softmax(policy_logits, -1)
    )
    torch.testing.assert_close(
        geometric_mixture_logits(policy_logits, ref_logits, 1.0), torch.log_softmax(ref_logits, -1)
    )
    mixed = geometric_mixture_logits(policy_logits, ref_logits, 0.3)
    assert mixed.shape == (2, 4, 5)
    expected = torch.log_softmax(0.7 * policy_logits + 0.3 * ref_logits, -1)  # raw logits: Z cancels
    torch.testing.assert_close(mixed, expected)
    torch.testing.assert_close(policy_logits, policy_before)
    torch.testing.assert_close(ref_logits, ref_before)
    with pytest.raises(ValueError, match="mixture_coef"):
        geometric_mixture_logits(policy_logits, ref_logits, 1.5)
    with pytest.raises(ValueError, match="differ"):
        geometric_mixture_logits(policy_logits, ref_logits[..., :4], 0.5)


# --- preference helpers --------------------------------------------------------------------------------


def test_preference_lookups() -> None:
    responses = torch.tensor([0, 1, 2, 2])
    opponents = torch.tensor([1, 2, 0, 2])
    preference = preference_from_matrix(ROCK_PAPER_SCISSORS, responses, opponents)
    torch.testing.assert_close(preference, torch.tensor([0.9, 0.9, 0.9, 0.5], dtype=torch.float64))
    swapped = preference_from_matrix(ROCK_PAPER_SCISSORS, opponents, responses)
    torch.testing.assert_close(preference + swapped, torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="K, K"):
        preference_from_matrix(ROCK_PAPER_SCISSORS[:2], responses, opponents)
    # Bradley–Terry: σ(1 − 0) = 0.731059, σ(0 − 0) = 1/2.
    torch.testing.assert_close(
        preference_from_rewards(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])),
        torch.tensor([0.731059, 0.5]),
    )


# --- the loss ------------------------------------------------------------------------------------------


def test_loss_and_metrics_hand_worked() -> None:
    # τ = 0.1. ℓ = −[P − 1/2 − τ (log π − log μ)] · log π.
    #   row 0: π = 0.5, μ = 0.25, P = 0.9: score = 0.4 − 0.1 log 2 = 0.330685; ℓ = 0.330685 · log 2 = 0.229214
    #   row 1: π = μ = 0.25,      P = 0.3: score = −0.2;               ℓ = −0.2 · log 4 = −0.277259
    policy_logprobs = torch.tensor([0.5, 0.25]).log()
    ref_logprobs = torch.tensor([0.25, 0.25]).log()
    preference = torch.tensor([0.9, 0.3])
    loss, metrics = nash_md_loss(policy_logprobs, preference, ref_logprobs, kl_coef=0.1)
    torch.testing.assert_close(loss, torch.tensor([0.229214, -0.277259]), atol=1e-6, rtol=0)
    torch.testing.assert_close(metrics["nash/preference"], torch.tensor(0.6))
    torch.testing.assert_close(metrics["nash/score"], torch.tensor((0.330685 - 0.2) / 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(metrics["kl/ref"], torch.tensor(math.log(2) / 2))
    torch.testing.assert_close(
        metrics["policy/logprob_mean"], torch.tensor((math.log(0.5) + math.log(0.25)) / 2)
    )
    assert all(not value.requires_grad for value in metrics.values())


def test_gradient_hand_worked_through_a_softmax() -> None:
    # π = softmax(θ) = (0.5, 0.25, 0.25), μ = (0.25, 0.25, 0.5), τ = 0.1; ∇_θ log π(y) = e_y − π, so
    # ∇_θ ℓ = −score · (e_y − π):
    #   row 0 (y = 0, P = 0.9): score 0.330685 → −0.330685 · (0.5, −0.25, −0.25)
    #                                          = (−0.165343, 0.082671, 0.082671)
    #   row 1 (y = 1, P = 0.3): score −0.2     → 0.2 · (−0.5, 0.75, −0.25)      = (−0.1, 0.15, −0.05)
    theta = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64).log().requires_grad_(True)
    ref = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64).log().requires_grad_(True)
    preference = torch.tensor([0.9, 0.3], dtype=torch.float64, requires_grad=True)
    responses = torch.tensor([0, 1])
    logprobs = torch.log_softmax(theta, -1)
    loss, _ = nash_md_loss(logprobs[responses], preference, ref[responses], kl_coef=0.1)
    loss.sum().backward()
    expected = torch.tensor([-0.165343 - 0.1, 0.082671 + 0.15, 0.082671 - 0.05], dtype=torch.float64)
    torch.testing.assert_close(theta.grad, expected, atol=1e-6, rtol=0)
    # The preference model and the reference are constants: no gradient reaches them.
    assert ref.grad is None and preference.grad is None


def test_expected_update_is_the_gradient_of_the_regularised_preference() -> None:
    # Averaged over y ~ π, y' ~ π' (π' held fixed), the per-sample gradients equal −∇_θ P_τ(π_θ ≻ π') =
    # −∇_θ [Σ_{y,y'} π(y) P(y ≻ y') π'(y') − τ KL(π_θ, μ)] (Munos et al. 2023, §7, Eq. 9): the 1/2 and the
    # missing "+1" of ∇KL's score form both vanish in expectation since E_π[∇ log π] = 0.
    theta = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
    ref_logprobs = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()
    opponent = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    tau = 0.3
    logprobs = torch.log_softmax(theta, -1)
    weights = logprobs.detach().exp()[PAIR_Y] * opponent[PAIR_Y_OPP]
    preference = preference_from_matrix(ROCK_PAPER_SCISSORS, PAIR_Y, PAIR_Y_OPP)
    loss, _ = nash_md_loss(logprobs[PAIR_Y], preference, ref_logprobs[PAIR_Y], tau)
    (estimated,) = torch.autograd.grad((weights * loss).sum(), theta)

    probs = torch.softmax(theta, -1)
    kl = (probs * (torch.log_softmax(theta, -1) - ref_logprobs)).sum()
    objective = probs @ ROCK_PAPER_SCISSORS @ opponent - tau * kl
    (exact,) = torch.autograd.grad(-objective, theta)
    torch.testing.assert_close(estimated, exact)


def test_loss_validates_its_arguments() -> None:
    logprobs = torch.zeros(3)
    with pytest.raises(ValueError, match="same shape"):
        nash_md_loss(logprobs, torch.zeros(2), logprobs, 0.1)
    with pytest.raises(ValueError, match="kl_coef"):
        nash_md_loss(logprobs, torch.zeros(3), logprobs, -0.1)


# --- rock–paper–scissors: Nash-MD finds the mixed equilibrium ------------------------------------------


def test_nash_md_pg_sampled_converges_to_the_mixed_equilibrium() -> None:
    # 256 sampled pairs a step, y' from the geometric mixture with β = 0.125 (the paper's best TL;DR value).
    final, _ = train(geometric_opponent(UNIFORM_LOGPROBS, 0.125), kl_coef=0.1, lr=1.0, steps=300, batch=256)
    assert distance_to_uniform(final) < TOLERANCE, final
    # No response beats the final policy by more than the tolerance: max_y P(y ≻ π) − 1/2 ≈ 0.
    assert (ROCK_PAPER_SCISSORS @ final).max().item() - 0.5 < TOLERANCE


@pytest.mark.parametrize("mixture_coef", [0.0, 0.125, 0.5, 1.0])
def test_nash_md_pg_expected_update_converges_for_every_mixture_coef(mixture_coef: float) -> None:
    final, _ = train(geometric_opponent(UNIFORM_LOGPROBS, mixture_coef), kl_coef=0.1, lr=3.0, steps=300)
    assert distance_to_uniform(final) < 1e-3, final


def test_self_play_against_the_mixture_of_past_policies_converges() -> None:
    # Fictitious self-play (the lecture: "the max player should play against a mixture of past policies"):
    # y' comes from the average of every iterate so far. With the expected update both that mixture and the
    # last iterate converge (smoothed fictitious play: the policy tracks the KL-regularised best response
    # to the mixture). With 1024 sampled pairs a step the mixture still converges (≤ 0.01 over seeds 0–4);
    # the last iterate keeps a noise of a few hundredths at this step size, so it gets twice the tolerance.
    final, history = train(past_mixture_opponent, kl_coef=0.1, lr=10.0, steps=1000)
    assert distance_to_uniform(final) < TOLERANCE, final
    assert distance_to_uniform(history.mean(0)) < TOLERANCE
    final, history = train(past_mixture_opponent, kl_coef=0.1, lr=10.0, steps=1000, batch=1024)
    assert distance_to_uniform(history.mean(0)) < TOLERANCE
    assert distance_to_uniform(final) < 2 * TOLERANCE, final


def test_unregularised_self_play_cycles_but_its_average_converges() -> None:
    # τ = 0, opponent = the current policy: the rotational game pushes the last iterate round and out towards
    # the simplex's corners, while the average of the iterates — the mixture of past policies, which
    # no-regret self-play guarantees (Munos et al. 2023 §5) — settles at the equilibrium.
    final, history = train(geometric_opponent(UNIFORM_LOGPROBS, 0.0), kl_coef=0.0, lr=1.0, steps=300)
    assert distance_to_uniform(final) > 0.3, final
    assert distance_to_uniform(history.mean(0)) < TOLERANCE


def tabular_nash_md(ref_logprobs: torch.Tensor, kl_coef: float, steps: int) -> torch.Tensor:
    """Munos et al. 2023 §6, the closed-form Nash-MD step with Theorem 1's η_t = 2 / (τ (t + 2)):
    π_t^μ ∝ π_t^{1−η_t τ} μ^{η_t τ};  π_{t+1} ∝ π_t^μ · exp(η_t P(y ≻ π_t^μ))."""
    logprobs = ref_logprobs.clone()
    for step in range(steps):
        eta = 2.0 / (kl_coef * (step + 2))
        mixture = geometric_mixture_logits(logprobs, ref_logprobs, eta * kl_coef).double()
        logprobs = torch.log_softmax(mixture + eta * (ROCK_PAPER_SCISSORS @ mixture.exp()), -1)
    return logprobs.exp()


def test_non_uniform_reference_reaches_the_regularised_equilibrium() -> None:
    # With μ = (0.6, 0.3, 0.1) the regularised equilibrium π*_τ is not uniform. It solves
    # π*(y) ∝ μ(y) exp(P(y ≻ π*) / τ) (first-order condition of max_π P_τ(π ≻ π*)). Tabular Nash-MD
    # reaches it, and so does the policy gradient with β = 0.
    ref_logprobs = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64).log()
    tau = 0.1

    def fixed_point_residual(policy: torch.Tensor, opponent: torch.Tensor) -> float:
        best_response = torch.softmax(ref_logprobs + ROCK_PAPER_SCISSORS @ opponent / tau, -1)
        return (best_response - policy).abs().max().item()

    equilibrium = tabular_nash_md(ref_logprobs, tau, steps=3000)
    assert fixed_point_residual(equilibrium, equilibrium) < 1e-3
    assert distance_to_uniform(equilibrium) > 0.1  # a genuinely different point from the uniform case

    self_play, _ = train(
        geometric_opponent(ref_logprobs, 0.0), kl_coef=tau, lr=3.0, steps=1000, ref_logprobs=ref_logprobs
    )
    torch.testing.assert_close(self_play, equilibrium, atol=1e-3, rtol=0)

    # A fixed β > 0 moves the stationary point: it solves π ∝ μ exp(P(y ≻ π^β) / τ) against the mixture
    # π^β rather than π itself (in tabular Nash-MD β = η_t τ shrinks to 0, so the two agree there).
    mixed, _ = train(
        geometric_opponent(ref_logprobs, 0.125), kl_coef=tau, lr=3.0, steps=1000, ref_logprobs=ref_logprobs
    )
    opponent = geometric_mixture_logits(mixed.log(), ref_logprobs, 0.125).double().exp()
    assert fixed_point_residual(mixed, opponent) < 1e-5
    assert (mixed - equilibrium).abs().max().item() > 0.01


# --- contrast: a Bradley–Terry reward cannot represent the cycle --------------------------------------


def test_bradley_terry_reward_collapses_where_nash_stays_mixed() -> None:
    generator = torch.Generator().manual_seed(0)
    # Preference data as RLHF collects it: both responses from an SFT-like policy that favours response 0,
    # labelled by the same cyclic preferences.
    data_policy = torch.tensor([0.7, 0.2, 0.1])
    first = torch.multinomial(data_policy, 2000, True, generator=generator)
    second = torch.multinomial(data_policy, 2000, True, generator=generator)
    distinct = first != second
    first, second = first[distinct], second[distinct]
    first_wins = torch.rand(first.shape, generator=generator) < preference_from_matrix(
        ROCK_PAPER_SCISSORS.float(), first, second
    )
    chosen = torch.where(first_wins, first, second)
    rejected = torch.where(first_wins, second, first)

    rewards = torch.zeros(K, requires_grad=True)
    optimizer = torch.optim.Adam([rewards], lr=0.05)
    for _ in range(300):
        loss, _ = bradley_terry_loss(rewards[chosen], rewards[rejected])
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
    rewards = rewards.detach().double()

    # A scalar ranking is transitive, so it reverses at least one of the three 0.9 preferences 0≻1, 1≻2, 2≻0.
    bt_preference = preference_from_rewards(rewards[:, None], rewards[None, :])  # (K, K)
    cycle = [(0, 1), (1, 2), (2, 0)]
    assert any(bt_preference[i, j] < 0.5 for i, j in cycle)

    # RLHF: maximise E_π[r] − τ KL(π ‖ π_ref) (uniform π_ref, τ = 0.05) by REINFORCE, KL penalty sampled.
    tau = 0.05
    logits = torch.tensor(START_LOGITS, dtype=torch.float64, requires_grad=True)
    policy_optimizer = torch.optim.SGD([logits], lr=1.0)
    for _ in range(300):
        logprobs = torch.log_softmax(logits, -1)
        responses = torch.multinomial(logprobs.detach().exp(), 256, True, generator=generator)
        shaped = rewards[responses] - tau * (logprobs.detach()[responses] - UNIFORM_LOGPROBS[responses])
        advantages = (shaped - shaped.mean())[:, None]  # (N, 1): one "token" per response
        loss, _ = reinforce_loss(logprobs[responses][:, None], advantages, torch.ones_like(advantages))
        policy_optimizer.zero_grad()
        loss.backward()
        policy_optimizer.step()
    rlhf_policy = torch.softmax(logits.detach(), -1)
    assert rlhf_policy.max().item() > 0.9, rlhf_policy
    assert rlhf_policy.argmax().item() == rewards.argmax().item()

    # The collapsed policy is exploitable: some response beats it almost always. The Nash-MD policy,
    # trained on the pairwise preference itself, wins at least about half the time against every response.
    nash_policy, _ = train(
        geometric_opponent(UNIFORM_LOGPROBS, 0.125), kl_coef=0.1, lr=1.0, steps=300, batch=256
    )
    worst_case_rlhf = (rlhf_policy @ ROCK_PAPER_SCISSORS).min().item()  # min_y' P(π ≻ y')
    worst_case_nash = (nash_policy @ ROCK_PAPER_SCISSORS).min().item()
    assert worst_case_rlhf < 0.2
    assert worst_case_nash > 0.5 - TOLERANCE
