"""Distribution matching: instead of maximising reward − β·KL, fit the policy to that objective's optimum
p*(y|x) ∝ π_ref(y|x)·exp(r(x, y)/β) directly, by importance sampling from a proposal.

Each iteration: G samples per prompt from the current policy (the proposal q, on-policy) → scores r →
log π_ref and log q of each whole response → DPG (Khalifa et al. 2021) or BRAIn (Pandey et al. 2024)
from ``losses/distribution.py`` with the weights normalised within each prompt's group → one gradient step.
The sampling, reference and logging loop is shared with the other online algorithms (``online.py``).
"""

from __future__ import annotations

from tether.algorithms.online import run_online
from tether.config import DistributionMatchingConfig
from tether.losses.distribution import brain_loss, dpg_loss
from tether.rollout.experience import Experience

LOSSES = {"dpg": dpg_loss, "brain": brain_loss}


def no_advantages(experience: Experience, config: DistributionMatchingConfig) -> None:
    """Distribution matching weighs samples by P/q inside the loss; there are no advantages to compute."""


def distribution_loss(out: dict, minibatch: Experience, config: DistributionMatchingConfig, kl_coef: float):
    """The configured estimator on whole-response log-probs; each prompt's group sums to its estimate."""
    mask = minibatch.response_mask.float()
    policy = (out["logprobs"] * mask).sum(-1)  # (N,) log π_θ(y|x)
    proposal = (minibatch.old_logprobs * mask).sum(-1)  # (N,) log q(y|x): the sampling policy
    reference = (minibatch.ref_logprobs * mask).sum(-1)  # (N,) log π_ref(y|x)
    losses, metrics = LOSSES[config.method](
        policy, proposal, reference, minibatch.scores, config.beta, group_size=config.group_size
    )
    return losses.sum() / (policy.shape[0] // config.group_size), metrics


def run_distribution_matching(config: DistributionMatchingConfig) -> dict[str, float]:
    """Run DPG or BRAIn (``config.method``); returns the last iteration's metrics."""
    return run_online(config, "none", no_advantages, distribution_loss)
