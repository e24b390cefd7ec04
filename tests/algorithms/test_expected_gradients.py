"""Expected-gradient harness: every objective the online loop can run, through the loop's own scoring,
advantage and loss code, against the gradient of the objective its docstring names.

The policy is a tabular autoregressive model over responses of at most two tokens: logits θ₁ (V,) for the
first token and θ₂ (V, V) for the second given the first. With ``eos`` the vocabulary is {a, b, EOS}
and a response stops at EOS (7 responses, 4 of them unfinished at two tokens); without it every response
has exactly two tokens of {a, b, c} (9 responses). Every expectation over a batch of G responses is an
exact sum over all 7^G (or 9^G) batches, each weighted by its probability; the objective J(θ) is an exact
sum over responses, differentiated by autograd. Where an estimator's expectation has no simpler form
(GRPO, REINFORCE++) the scores are 0/1 and the closed form is a binomial sum worked out below.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tether.algorithms.distribution_matching import distribution_loss, no_advantages
from tether.algorithms.nash_md import nash_loss, pair_preferences
from tether.algorithms.online import check_kl_settings
from tether.algorithms.online_batch import score_experience
from tether.algorithms.policy_gradient import pg_advantages, pg_loss
from tether.algorithms.ppo import ppo_advantages, ppo_loss
from tether.config import ConfigError, DistributionMatchingConfig, NashMDConfig, PGConfig, PPOConfig
from tether.losses.policy import aggregate
from tether.ops import kl_estimate
from tether.rollout.experience import Experience


@pytest.fixture(autouse=True)
def _float64():
    """Exact sums in float64 for these tests only (set per test: collection imports every module first)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class Toy:
    """The tabular policy, its frozen reference, and every response with its per-token tables."""

    def __init__(self, seed: int = 0, eos: bool = True) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.theta1 = torch.randn(3, generator=generator, dtype=torch.float64).requires_grad_()
        self.theta2 = torch.randn(3, 3, generator=generator, dtype=torch.float64).requires_grad_()
        self.ref1 = torch.randn(3, generator=generator, dtype=torch.float64)
        self.ref2 = torch.randn(3, 3, generator=generator, dtype=torch.float64)
        if eos:  # token 2 is EOS
            self.responses = [(2,)] + [(a, b) for a in (0, 1) for b in (0, 1, 2)]
        else:
            self.responses = [(a, b) for a in range(3) for b in range(3)]
        self.first = torch.tensor([r[0] for r in self.responses])
        self.second = torch.tensor([r[1] if len(r) == 2 else 0 for r in self.responses])
        self.mask = torch.tensor([[1.0, float(len(r) == 2)] for r in self.responses])
        self.finished = torch.tensor([r[-1] == 2 for r in self.responses]) if eos else torch.ones(9).bool()

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.theta1, self.theta2]

    def token_logprobs(self, theta1: torch.Tensor, theta2: torch.Tensor) -> torch.Tensor:
        """(R, 2) log-probs of each response's tokens, 0 after a response ends."""
        first = torch.log_softmax(theta1, -1)[self.first]
        second = torch.log_softmax(theta2, -1)[self.first, self.second]
        return torch.stack([first, second], dim=1) * self.mask

    def logprobs(self) -> torch.Tensor:
        return self.token_logprobs(self.theta1, self.theta2)

    def ref_logprobs(self) -> torch.Tensor:
        return self.token_logprobs(self.ref1, self.ref2)

    def entropies(self) -> torch.Tensor:
        """(R, 2) entropy of the next-token distribution at each response position."""

        def entropy(logits: torch.Tensor) -> torch.Tensor:
            logp = torch.log_softmax(logits, -1)
            return -(logp.exp() * logp).sum(-1)

        return torch.stack(
            [entropy(self.theta1).expand(len(self.responses)), entropy(self.theta2)[self.first]], 1
        )

    def probs(self) -> torch.Tensor:
        """(R,) π_θ(y), with gradient."""
        return self.logprobs().sum(-1).exp()

    def kl(self) -> torch.Tensor:
        """KL(π_θ ‖ π_ref) of whole responses, exactly."""
        return (self.probs() * (self.logprobs() - self.ref_logprobs()).sum(-1)).sum()


def batch(
    toy: Toy, rows: torch.Tensor, logprobs: torch.Tensor, old: torch.Tensor | None = None
) -> Experience:
    n = len(rows)
    return Experience(
        prompts=["p"] * n,
        completions=[""] * n,
        sequences=torch.zeros(n, 3, dtype=torch.long),
        attention_mask=torch.ones(n, 3),
        response_mask=toy.mask[rows],
        finished=toy.finished[rows],
        old_logprobs=(logprobs if old is None else old)[rows].detach(),
        ref_logprobs=toy.ref_logprobs()[rows],
        extras={"judge_pairwise": torch.zeros(n)},
    )


def expected_loss_gradient(toy: Toy, group_size: int, loss_of_batch) -> list[torch.Tensor]:
    """Σ over every batch of G responses of P(batch) · ∇loss(batch): the exact expected gradient."""
    logprobs, entropies = toy.logprobs(), toy.entropies()
    probs = logprobs.sum(-1).exp().detach()
    total = torch.zeros(())
    for combo in itertools.product(range(len(toy.responses)), repeat=group_size):
        rows = torch.tensor(combo)
        total = total + probs[rows].prod() * loss_of_batch(rows, logprobs, entropies)
    return list(torch.autograd.grad(total, toy.params))


def gradient(value: torch.Tensor, toy: Toy) -> list[torch.Tensor]:
    return list(torch.autograd.grad(value, toy.params))


def assert_gradients_close(actual, expected, rtol=1e-5, atol=1e-7) -> None:
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


SCORES = torch.tensor([0.3, 1.0, -0.5, 0.8, 0.2, -1.0, 0.6])  # one per response of the EOS toy


def penalised(toy: Toy, scores: torch.Tensor, penalty: float) -> torch.Tensor:
    return scores - penalty * (~toy.finished).double()


def pg_batch_loss(toy, config, scores, kl_coef, baseline=0.0):
    def loss_of_batch(rows, logprobs, entropies):
        experience = batch(toy, rows, logprobs)
        score_experience(experience, scores[rows], config, kl_coef)
        pg_advantages(experience, config, {"baseline": baseline})
        out = {"logprobs": logprobs[rows], "entropy": entropies[rows], "values": None}
        return pg_loss(out, experience, config, kl_coef)[0]

    return loss_of_batch


# --------------------------------------------------------------------------------- REINFORCE family


@pytest.mark.parametrize(
    ("estimator", "group_size", "scale"),
    [
        ("reinforce_baseline", 2, 1.0),  # a baseline carried from earlier batches: unbiased
        ("rloo", 3, 1.0),  # leave-one-out: unbiased
        ("dr_grpo", 3, 2 / 3),  # the group mean includes the sample itself: (G − 1)/G · ∇J
    ],
)
def test_reinforce_with_each_baseline_and_kl_in_the_reward(estimator, group_size, scale):
    toy = Toy(seed=1)
    beta, penalty = 0.3, 1.0
    config = PGConfig(
        estimator=estimator,
        group_size=group_size,
        kl_in_reward=True,
        kl_estimator="k1",
        kl_coef=beta,
        unfinished_penalty=penalty,
        loss_agg="seq_mean_token_sum",
    )
    actual = expected_loss_gradient(toy, group_size, pg_batch_loss(toy, config, SCORES, beta, baseline=0.37))
    score = penalised(toy, SCORES, penalty)
    # The reward − β·KL of the sequence-level sequence reward R = score − βΣℓ passes through the baseline.
    objective = (toy.probs() * score).sum() - beta * toy.kl()
    assert_gradients_close(actual, [-scale * g for g in gradient(objective, toy)])


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_as_a_loss_term_gives_the_gradient_of_kl_for_every_estimator(estimator):
    # RLOO's policy term gives ∇E[score]; the loss term must add β∇KL(π ‖ π_ref) exactly.
    toy = Toy(seed=2)
    beta = 0.4
    config = PGConfig(
        estimator="rloo",
        group_size=2,
        kl_in_reward=False,
        kl_estimator=estimator,
        kl_coef=beta,
        unfinished_penalty=0.5,
        loss_agg="seq_mean_token_sum",
    )
    actual = expected_loss_gradient(toy, 2, pg_batch_loss(toy, config, SCORES, beta))
    objective = (toy.probs() * penalised(toy, SCORES, 0.5)).sum() - beta * toy.kl()
    assert_gradients_close(actual, [-g for g in gradient(objective, toy)])


def test_differentiating_a_kl_estimate_alone_is_wrong():
    # The harness's power: the old loss term (the estimate itself, differentiated) fails it. k1 has zero
    # expected gradient, k3 the gradient of the reverse KL(π_ref ‖ π) at each state.
    toy = Toy(seed=2)

    def naive(estimator):
        def loss_of_batch(rows, logprobs, entropies):
            kl = kl_estimate(logprobs[rows], toy.ref_logprobs()[rows], estimator)
            return aggregate(kl, toy.mask[rows], "seq_mean_token_sum")

        return expected_loss_gradient(toy, 1, loss_of_batch)

    kl_gradient = gradient(toy.kl(), toy)
    for g in naive("k1"):
        torch.testing.assert_close(g, torch.zeros_like(g), atol=1e-7, rtol=0)  # fp32 estimates
    assert not torch.allclose(naive("k3")[0], kl_gradient[0], atol=1e-3)


def test_kl_in_the_reward_refuses_the_biased_estimators():
    for estimator in ("k2", "k3"):
        with pytest.raises(ConfigError, match="only k1"):
            check_kl_settings(PGConfig(kl_in_reward=True, kl_estimator=estimator, kl_coef=0.1))
    check_kl_settings(PGConfig(kl_in_reward=True, kl_estimator="k1", kl_coef=0.1))
    check_kl_settings(PGConfig(kl_in_reward=False, kl_estimator="k3", kl_coef=0.1))


def binary_coefficient(p: float, group_size: int, advantage) -> float:
    """E[Â_i ∇log π(y_i)] = (g(1) − g(0))·∇p for 0/1 scores, p = P(score = 1): g(s) is the mean advantage of
    a sample scoring s over the binomial number of successes among the other G − 1 samples."""
    g = {1: 0.0, 0: 0.0}
    for k in range(group_size):
        weight = math.comb(group_size - 1, k) * p**k * (1 - p) ** (group_size - 1 - k)
        g[1] += weight * advantage(k + 1, 1)
        g[0] += weight * advantage(k, 0)
    return g[1] - g[0]


BINARY = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])


def test_grpo_expected_gradient_with_binary_scores_and_its_kl_loss_term():
    toy, group_size, beta = Toy(seed=3), 3, 0.2
    config = PGConfig(
        estimator="grpo",
        group_size=group_size,
        kl_coef=beta,
        unfinished_penalty=0.0,
        loss_agg="seq_mean_token_sum",
    )
    actual = expected_loss_gradient(toy, group_size, pg_batch_loss(toy, config, BINARY, beta))

    def advantage(m, score):  # m successes in the group; std with Bessel's correction, eps 1e-6
        if m in (0, group_size):
            return 0.0
        mean = m / group_size
        std = math.sqrt(m * (group_size - m) / (group_size * (group_size - 1)))
        return (score - mean) / (std + 1e-6)

    success = (toy.probs() * BINARY).sum()
    coefficient = binary_coefficient(float(success.detach()), group_size, advantage)
    expected = [-coefficient * a + beta * b for a, b in zip(gradient(success, toy), gradient(toy.kl(), toy))]
    assert_gradients_close(actual, expected)


def test_reinforce_pp_expected_gradient_with_binary_scores():
    # Responses of exactly two tokens: REINFORCE++'s token-level whitening is then a whitening of the
    # G responses' scores over G·2 tokens (no KL: every token's return is the score).
    toy, group_size, length = Toy(seed=4, eos=False), 3, 2
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    config = PGConfig(
        estimator="reinforce_pp", group_size=group_size, kl_coef=0.0, loss_agg="seq_mean_token_sum"
    )
    actual = expected_loss_gradient(toy, group_size, pg_batch_loss(toy, config, scores, 0.0))

    def advantage(m, score):
        tokens = group_size * length
        variance = length * m * (group_size - m) / group_size / (tokens - 1)  # unbiased, over tokens
        return (score - m / group_size) / math.sqrt(variance + 1e-8)

    success = (toy.probs() * scores).sum()
    coefficient = binary_coefficient(float(success.detach()), group_size, advantage)
    assert_gradients_close(actual, [-coefficient * g for g in gradient(success, toy)])


@pytest.mark.parametrize(("loss_agg", "scale"), [("token_mean", 0.5), ("seq_mean_token_mean", 0.5)])
def test_token_averaging_modes_scale_the_gradient_by_the_response_length(loss_agg, scale):
    toy = Toy(seed=5, eos=False)
    scores = torch.linspace(-1, 1, 9)
    config = PGConfig(estimator="rloo", group_size=2, kl_coef=0.2, kl_estimator="k3", loss_agg=loss_agg)
    actual = expected_loss_gradient(toy, 2, pg_batch_loss(toy, config, scores, 0.2))
    objective = (toy.probs() * scores).sum() - 0.2 * toy.kl()
    assert_gradients_close(actual, [-scale * g for g in gradient(objective, toy)])


def test_entropy_bonus_is_the_gradient_of_the_entropy_at_the_visited_states():
    # −c·H(π(·|s_t)) per token with the states held fixed: E = −c Σ_s d_π(s) ∇H(π(·|s)), d_π detached.
    toy, coef = Toy(seed=6), 0.3
    config = PGConfig(
        estimator="rloo",
        group_size=2,
        kl_coef=0.0,
        ent_coef=coef,
        unfinished_penalty=0.0,
        loss_agg="seq_mean_token_sum",
    )
    actual = expected_loss_gradient(toy, 2, pg_batch_loss(toy, config, SCORES, 0.0))
    first = torch.softmax(toy.theta1, -1).detach()  # probability of reaching each second-token state
    entropies = toy.entropies()
    visited = entropies[0, 0] + first[0] * entropies[1, 1] + first[1] * entropies[4, 1]  # rows (a,·), (b,·)
    objective = (toy.probs() * SCORES).sum() + coef * visited
    assert_gradients_close(actual, [-g for g in gradient(objective, toy)])


# --------------------------------------------------------------------------------- PPO


def value_tables(toy: Toy, scores: torch.Tensor, beta: float):
    """V^π(s) for the start state and after each first token, of the shaped reward −βℓ_t + score at the end."""
    with torch.no_grad():
        logprobs, ref = toy.logprobs(), toy.ref_logprobs()
        rewards = -beta * (logprobs - ref) * toy.mask
        last = toy.mask.sum(-1).long() - 1
        rewards[torch.arange(len(scores)), last] += scores
        probs = logprobs.sum(-1).exp()
        start = (probs * rewards.sum(-1)).sum()
        after = torch.zeros(3)
        for token in range(3):
            rows = (toy.first == token) & (toy.mask[:, 1] > 0)
            if rows.any():
                conditional = logprobs[rows, 1].exp()
                after[token] = (conditional * rewards[rows, 1]).sum()
    return start, after


@pytest.mark.parametrize(("lam", "exact_values"), [(1.0, False), (0.5, True)])
def test_ppo_surrogate_at_ratio_one_is_the_policy_gradient(lam, exact_values):
    # λ = 1: any state-dependent V is a baseline. λ < 1: unbiased when V = V^π.
    toy, beta = Toy(seed=7), 0.25
    score = penalised(toy, SCORES, 1.0)
    if exact_values:
        start, after = value_tables(toy, score, beta)
    else:
        start, after = torch.tensor(0.4), torch.tensor([-0.3, 0.9, 0.0])
    config = PPOConfig(
        kl_coef=beta, lam=lam, whiten_advantages=False, unfinished_penalty=1.0, loss_agg="seq_mean_token_sum"
    )

    def loss_of_batch(rows, logprobs, entropies):
        experience = batch(toy, rows, logprobs)
        values = torch.stack([start.expand(len(rows)), after[toy.first[rows]]], 1) * toy.mask[rows]
        experience.values = values
        score_experience(experience, SCORES[rows], config, beta)
        ppo_advantages(experience, config)
        out = {"logprobs": logprobs[rows], "entropy": entropies[rows], "values": values}
        return ppo_loss(out, experience, config, beta)[0]

    actual = expected_loss_gradient(toy, 1, loss_of_batch)
    objective = (toy.probs() * score).sum() - beta * toy.kl()
    assert_gradients_close(actual, [-g for g in gradient(objective, toy)])


# --------------------------------------------------------------------------------- DPG, BRAIn


@pytest.mark.parametrize("method", ["dpg", "brain"])
def test_distribution_matching_moves_down_the_kl_from_the_target(method):
    # One prompt's group holds each response in proportion to π_θ (200 000 rows): the self-normalised
    # weights are then exact up to rounding the counts, and E[∇loss] = ∇KL(p* ‖ π_θ), p* ∝ π_ref·e^{r/β}.
    toy, beta = Toy(seed=8), 0.5
    score = penalised(toy, SCORES, 1.0)
    counts = (toy.probs().detach() * 200_000).round().long()
    rows = torch.repeat_interleave(torch.arange(len(toy.responses)), counts)
    config = DistributionMatchingConfig(
        method=method, beta=beta, group_size=len(rows), unfinished_penalty=1.0
    )
    logprobs = toy.logprobs()
    experience = batch(toy, rows, logprobs)
    score_experience(experience, SCORES[rows], config, 0.0)
    no_advantages(experience, config)
    out = {"logprobs": logprobs[rows], "entropy": None, "values": None}
    actual = gradient(distribution_loss(out, experience, config, 0.0)[0], toy)
    target = torch.softmax(toy.ref_logprobs().sum(-1) + score / beta, 0)
    cross_entropy = -(target * toy.logprobs().sum(-1)).sum()  # ∇CE(p*, π_θ) = ∇KL(p* ‖ π_θ)
    assert_gradients_close(actual, gradient(cross_entropy, toy), rtol=2e-3, atol=2e-4)


# --------------------------------------------------------------------------------- Nash-MD


def nash_expected(toy, opponent_probs, preference, tau):
    """−∇[Σ_y π(y) Σ_y' π'(y') P(y ≻ y') − τ KL(π ‖ μ)], the opponent π' held fixed."""
    value = toy.probs() @ preference @ opponent_probs - tau * toy.kl()
    return [-g for g in gradient(value, toy)]


def nash_batch_loss(toy, config, logprobs_old, tau, opponent_probs):
    def loss(pairs_weighted):
        total = torch.zeros(())
        logprobs = toy.logprobs()
        for y, y_opp in itertools.product(range(len(toy.responses)), repeat=2):
            rows = torch.tensor([y, y_opp])
            experience = batch(toy, rows, logprobs, old=logprobs_old)
            score_experience(experience, SCORES[rows], config, tau)
            pair_preferences(experience, config)
            out = {"logprobs": logprobs[rows], "entropy": None, "values": None}
            weight = logprobs_old.sum(-1).exp()[y].detach() * opponent_probs[y_opp]
            total = total + weight * nash_loss(out, experience, config, tau)[0]
        return gradient(total, toy)

    return loss


def test_nash_md_is_the_gradient_of_the_regularised_preference_with_the_adapted_tau():
    # The loop passes τ (adapted when target_kl is set); config.kl_coef must not be read instead.
    toy, tau = Toy(seed=9), 0.3
    config = NashMDConfig(kl_coef=0.05, preference_scale=0.7, opponent="mixture", unfinished_penalty=1.0)
    opponent = toy.ref_logprobs().sum(-1).exp()
    score = penalised(toy, SCORES, 1.0)
    preference = torch.sigmoid((score[:, None] - score[None, :]) / 0.7)
    actual = nash_batch_loss(toy, config, toy.logprobs(), tau, opponent)(None)
    assert_gradients_close(actual, nash_expected(toy, opponent, preference, tau))


def test_nash_md_second_epoch_weights_the_old_samples_by_the_ratio():
    # Samples of π_old, loss at θ ≠ θ_old (within the clip range): E_{π_old}[∇loss] = the gradient at θ.
    toy, tau = Toy(seed=10), 0.2
    with torch.no_grad():
        old = toy.token_logprobs(toy.theta1 + torch.tensor([0.04, -0.03, 0.0]), toy.theta2 * 0.97)
    config = NashMDConfig(kl_coef=tau, preference_scale=1.0, opponent="mixture", clip_eps=0.5)
    opponent = toy.ref_logprobs().sum(-1).exp()
    score = penalised(toy, SCORES, 1.0)
    preference = torch.sigmoid(score[:, None] - score[None, :])
    actual = nash_batch_loss(toy, config, old, tau, opponent)(None)
    assert_gradients_close(actual, nash_expected(toy, opponent, preference, tau))


# --------------------------------------------------------------------------------- GSPO, DAPO


@pytest.mark.parametrize(
    ("policy_loss", "extra", "scale"),
    [
        ("gspo", {}, 0.5),  # every token carries ∂ℓ_i/∂log π_t = −Â_i s_i/|y_i|: ∇J/|y| at s = 1
        ("gspo_token", {}, 0.5),
        ("seq_clip", {}, 1.0),  # the whole response's ratio, a mean over responses: REINFORCE at ratio 1
        ("ppo_clip", {"clip_eps_high": 0.28}, 1.0),  # DAPO's decoupled range: REINFORCE at ratio 1
    ],
)
def test_policy_loss_variants_at_ratio_one(policy_loss, extra, scale):
    toy = Toy(seed=11, eos=False)
    scores = torch.linspace(-1, 1, 9)
    config = PGConfig(
        estimator="rloo",
        group_size=2,
        kl_coef=0.0,
        policy_loss=policy_loss,
        loss_agg="seq_mean_token_mean" if policy_loss != "ppo_clip" else "seq_mean_token_sum",
        **extra,
    )
    actual = expected_loss_gradient(toy, 2, pg_batch_loss(toy, config, scores, 0.0))
    objective = (toy.probs() * scores).sum()
    assert_gradients_close(actual, [-scale * g for g in gradient(objective, toy)])
