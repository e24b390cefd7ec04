"""Distribution matching: instead of maximising reward − β·KL, fit the policy to that objective's optimum
p*(y|x) ∝ π_ref(y|x)·exp(r(x, y)/β) directly, by importance sampling from a proposal.

Each iteration: G samples per prompt from the proposal q → scores r → log π_ref and log q of each whole
response → DPG (Khalifa et al. 2021) or BRAIn (Pandey et al. 2024) from ``losses/distribution.py`` with
the weights normalised within each prompt's group → a gradient step. The sampling, reference and logging
loop is shared with the other online algorithms (``online.py``).

The proposal (``proposal=``): ``on_policy`` — q is the current π_θ; ``adaptive`` — off-policy KL-adaptive
DPG (Khalifa et al. 2021, Algorithm 1): q is a frozen copy of π_θ, replaced by the current π_θ after an
iteration only when π_θ is estimated closer to p* than q is (``losses.distribution.should_update_proposal``,
on the iteration's own samples of q). A frozen q keeps a bad update from feeding on its own samples.
"""

from __future__ import annotations

from typing import Any

import torch

from tether.algorithms.common import load_policy
from tether.algorithms.online import run_online
from tether.algorithms.online_batch import LoopHooks, forward
from tether.config import DistributionMatchingConfig
from tether.losses.distribution import brain_loss, dpg_loss, should_update_proposal
from tether.models.lora import frozen_copy, merged
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


def prompt_groups(minibatch: Experience, config: DistributionMatchingConfig) -> float:
    """The groups ``distribution_loss`` averages over: weighs accumulated minibatches."""
    return float(minibatch.sequences.shape[0] // config.group_size)


def adaptive_proposal(config: DistributionMatchingConfig, policy: Any) -> LoopHooks:
    """Off-policy DPG's frozen proposal q and the rule that moves it to π_θ (see the module docstring)."""
    proposal = frozen_copy(policy)
    state: dict[str, Any] = {"best_divergence": None, "proposal_updates": 0}

    def after_update(experience: Experience, module: Any) -> dict[str, float]:
        module.eval()
        with torch.no_grad():
            policy_now = forward(module, experience, config.temperature)["logprobs"]
        module.train()
        mask = experience.response_mask.float()
        update, divergences = should_update_proposal(
            (policy_now * mask).sum(-1),
            (experience.old_logprobs * mask).sum(-1),
            (experience.ref_logprobs * mask).sum(-1),
            experience.scores,
            config.beta,
            group_size=config.group_size,
            criterion=config.proposal_criterion,
            best_divergence=state["best_divergence"],
        )
        if update:
            proposal.load_state_dict(merged(module.policy).state_dict())
            state["best_divergence"] = float(divergences[f"{config.proposal_criterion}_target_policy"])
            state["proposal_updates"] += 1
        return {
            "proposal/updates": float(state["proposal_updates"]),
            **{f"proposal/{k}": float(v) for k, v in divergences.items()},
        }

    return LoopHooks(
        proposal=proposal, after_update=after_update, state=state, models=lambda: {"proposal": proposal}
    )


def run_distribution_matching(config: DistributionMatchingConfig) -> dict[str, float]:
    """Run DPG or BRAIn (``config.method``); returns the last iteration's metrics."""
    hooks = None
    if config.proposal == "adaptive":
        policy, _ = load_policy(config)
        hooks = adaptive_proposal(config, policy)
        del policy
    return run_online(config, "none", no_advantages, distribution_loss, hooks, count_fn=prompt_groups)
