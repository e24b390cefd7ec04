"""Nash learning from human feedback: the Nash-MD policy gradient, its geometric-mixture opponent and
pairwise preference helpers (Munos et al. 2023, "Nash Learning from Human Feedback", arXiv 2312.00886).

Letters: N rows (responses), K candidate responses (a toy's action set), V vocab.

A preference model P(y ≻ y' | x) ∈ [0, 1] compares two responses; unlike a Bradley–Terry reward it can
be non-transitive (rock–paper–scissors). NLHF looks for the policy that no other policy beats,
π* = argmax_π min_π' P(π ≻ π') (§3, Eq. 1), kept near a reference μ by the regularised preference
P_τ(π ≻ π') = P(π ≻ π') − τ KL(π, μ) + τ KL(π', μ) (§4), whose Nash equilibrium π*_τ is unique.

Nash-MD (§6, tabular) is mirror descent against a geometric mixture of the current policy and μ:

    π_t^μ(y) ∝ π_t(y)^{1−ητ} μ(y)^{ητ},
    π_{t+1} = argmax_π [η P(π ≻ π_t^μ) − KL(π, π_t^μ)],  i.e.  π_{t+1}(y) ∝ π_t^μ(y) exp(η P(y ≻ π_t^μ)),

whose last iterate converges to π*_τ (Theorem 1). Nash-MD-PG (§7) is its policy-gradient form for a
parametric π_θ: sample y ~ π_θ and y' from the opponent π_θ^β ∝ π_θ^{1−β} μ^β (β ∈ [0, 1]; β = 0 is
self-play, β = 1 plays the reference), and ascend ∇_θ P_τ(π_θ ≻ π_θ^β) with the opponent held fixed.
For an LM the mixture is taken token by token ("one-step-at-a-time regularised policy", §7): sample
y' with the per-token logits of ``geometric_mixture_logits``. TRL's ``NashMDTrainer`` (its
``GeometricMixtureWrapper`` and ``_compute_losses``) implements the same opponent and estimator.

A fixed β > 0 shifts the stationary point: gradient play stops where π ∝ μ exp(P(y ≻ π^β) / τ), against
the mixture π^β rather than π itself, whereas tabular Nash-MD's β = η_t τ shrinks to 0 and reaches π*_τ.
β = 0 (self-play with the KL term) has exactly π*_τ as its fixed point (tests/losses/test_nash.py).

Equation numbers follow arXiv v1; the ICML 2024 / v4 text moved the deep-learning algorithms to an
appendix. Inputs are never modified; preferences and reference log-probs are treated as constants.
"""

from __future__ import annotations

import torch


def geometric_mixture_logits(
    policy_logits: torch.Tensor, ref_logits: torch.Tensor, mixture_coef: float
) -> torch.Tensor:
    """Log-probabilities of the geometric mixture π^β ∝ π^{1−β} · μ^β, the Nash-MD opponent.

    log π^β = (1 − β) log π + β log μ − log Z, the regularised policy π_t^μ of Munos et al. 2023 §6 with
    β = ητ, and the alternative policy of Nash-MD-PG (§7, Eq. 11). In an LM it is applied per token,
    to the next-token distributions given the same prefix (§7); sampling y' token by token from it
    gives the one-step-at-a-time regularised policy, not the sequence-level mixture.

    policy_logits, ref_logits: (..., V) unnormalised; any per-row constant cancels. Returns (..., V)
    normalised fp32 log-probs (usable as logits for sampling). Gradients flow to both inputs: detach
    them to sample the opponent, which Nash-MD holds fixed.
    """
    if not 0.0 <= mixture_coef <= 1.0:
        raise ValueError(f"mixture_coef must be in [0, 1], got {mixture_coef}")
    if policy_logits.shape != ref_logits.shape:
        raise ValueError(
            f"policy_logits {tuple(policy_logits.shape)} and ref_logits {tuple(ref_logits.shape)} differ"
        )
    policy_logprobs = torch.log_softmax(policy_logits.float(), dim=-1)
    ref_logprobs = torch.log_softmax(ref_logits.float(), dim=-1)
    mixed = (1.0 - mixture_coef) * policy_logprobs + mixture_coef * ref_logprobs  # (..., V)
    return torch.log_softmax(mixed, dim=-1)


def preference_from_matrix(
    preference_matrix: torch.Tensor, responses: torch.Tensor, opponent_responses: torch.Tensor
) -> torch.Tensor:
    """P(y ≻ y') looked up in a (K, K) table whose entry [i, j] is P(i ≻ j): a two-argument preference
    model over K fixed responses (Munos et al. 2023 §3; a non-transitive table is the §3.2 point).

    A consistent table has P[i, j] + P[j, i] = 1 and P[i, i] = 1/2; it is not checked, since a learned
    model need not be exactly antisymmetric. responses, opponent_responses: (N,) integer ids in [0, K).
    Returns (N,) in the table's dtype.
    """
    if preference_matrix.ndim != 2 or preference_matrix.shape[0] != preference_matrix.shape[1]:
        raise ValueError(f"preference_matrix must be (K, K), got {tuple(preference_matrix.shape)}")
    if responses.shape != opponent_responses.shape:
        raise ValueError(
            f"responses {tuple(responses.shape)} and opponent_responses "
            f"{tuple(opponent_responses.shape)} differ"
        )
    return preference_matrix[responses.long(), opponent_responses.long()]


def preference_from_rewards(rewards: torch.Tensor, opponent_rewards: torch.Tensor) -> torch.Tensor:
    """P(y ≻ y') = σ(r(y) − r(y')) from scalar scores: the Bradley–Terry preference, for running Nash-MD
    with a reward model instead of a pairwise judge (as TRL's ``NashMDTrainer`` does). Such a preference
    is transitive by construction, so its Nash equilibrium is the reward's argmax. (N,), (N,) -> (N,)."""
    return torch.sigmoid(rewards - opponent_rewards)


def nash_md_loss(
    policy_logprobs: torch.Tensor,
    preference: torch.Tensor,
    ref_logprobs: torch.Tensor,
    kl_coef: float,
    old_logprobs: torch.Tensor | None = None,
    clip_eps: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The Nash-MD-PG update as a per-sample loss (Munos et al. 2023, §7, Eq. 9–10; opponent Eq. 11):

        ℓ = −[P(y ≻ y') − 1/2 − τ · sg(log π_θ(y) − log μ(y))] · log π_θ(y),

    y ~ π_θ and y' from the opponent (the geometric mixture π_θ^β for Nash-MD-PG, or any other fixed
    policy such as a mixture of past policies); sg is stop-gradient. Its gradient

        ∇ℓ = −[P(y ≻ y') − 1/2 − τ (log π_θ(y) − log μ(y))] ∇ log π_θ(y)

    is the paper's single-sample estimate of −∇_θ P_τ(π_θ ≻ π'), the regularised preference with the
    opponent π' held fixed: the preference against the opponent is the reward (1/2 is the value of a
    tie and a control variate — E_{y~π}[∇ log π] = 0), and τ (log π − log μ) ∇ log π is the
    score-function gradient of τ KL(π_θ, μ). A gradient step on its mean over y ~ π_θ, y' ~ π'
    stands in for Nash-MD's mirror-descent step (§6), as in TRL's ``NashMDTrainer``.

    policy_logprobs: (N,) log π_θ(y | x) of the whole response (sum the token log-probs under the
    response mask, e.g. ``tether.ops.masked_sum``); preference: (N,) P(y ≻ y' | x) ∈ [0, 1];
    ref_logprobs: (N,) log μ(y | x); kl_coef: τ ≥ 0. Returns the per-sample loss (N,) and detached
    batch means: ``nash/preference`` (win rate against the opponent), ``nash/score`` (the bracket),
    ``kl/ref`` (k1 estimate of KL(π_θ, μ)) and ``policy/logprob_mean``.

    ``old_logprobs`` (N,): log π_old(y | x) of the policy that sampled y, for a second pass over the same
    samples (more than one epoch). Then ℓ = −sg(bracket)·ρ with ρ = π_θ(y)/π_old(y): its gradient
    −bracket·ρ∇log π_θ(y) is the importance-weighted estimate of the same −∇_θ P_τ(π_θ ≻ π') at the current
    θ (E_{π_old}[ρ ∇log π_θ] = 0 drops the KL's extra term), and equals the on-policy one at θ = θ_old.
    ``clip_eps`` ε then bounds ρ as PPO does, per response: ℓ = −min(ρ·b, clip(ρ, 1 − ε, 1 + ε)·b).
    """
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be non-negative, got {kl_coef}")
    if not (policy_logprobs.shape == preference.shape == ref_logprobs.shape):
        raise ValueError(
            f"policy_logprobs {tuple(policy_logprobs.shape)}, preference {tuple(preference.shape)} and "
            f"ref_logprobs {tuple(ref_logprobs.shape)} must have the same shape (N,)"
        )
    log_ratio = policy_logprobs.detach() - ref_logprobs.detach()  # (N,) log π_θ(y) − log μ(y)
    score = preference.detach() - 0.5 - kl_coef * log_ratio  # (N,)
    if old_logprobs is None:
        loss = -score * policy_logprobs  # (N,)
    else:
        ratio = torch.exp(policy_logprobs - old_logprobs.detach())  # (N,) π_θ(y) / π_old(y)
        loss = -score * ratio
        if clip_eps is not None:
            loss = torch.maximum(loss, -score * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps))
    metrics = {
        "nash/preference": preference.detach().float().mean(),
        "nash/score": score.float().mean(),
        "kl/ref": log_ratio.float().mean(),
        "policy/logprob_mean": policy_logprobs.detach().float().mean(),
    }
    return loss, metrics
