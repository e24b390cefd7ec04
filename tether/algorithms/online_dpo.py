"""Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback"): the DPO
family's losses on fresh pairs from the current policy.

Each step: sample two responses per prompt from π_θ → the judge scores both, the higher is chosen (ties
carry no weight) → log π_ref of both from the frozen reference → one gradient step on a loss of
``losses/preference.py``. Unlike offline DPO, the pairs follow the policy as it moves. The sampling,
reference and logging loop is the one every online algorithm shares (``online.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tether.algorithms.dpo import parse_loss_spec, uses_reference
from tether.algorithms.online import run_online
from tether.config import OnlineDPOConfig
from tether.losses.preference import combined_preference_loss
from tether.rollout.experience import Experience


def label_pairs(experience: Experience, config: OnlineDPOConfig) -> None:
    """Rows 2i and 2i + 1 are a pair (G = 2); the judge's higher score wins. No advantages needed."""
    scores = experience.scores.view(-1, 2)
    experience.extras["first_wins"] = (scores[:, 0] > scores[:, 1]).repeat_interleave(2)
    experience.extras["decided"] = (scores[:, 0] != scores[:, 1]).repeat_interleave(2)


def make_online_dpo_loss(config: OnlineDPOConfig) -> Callable[..., tuple[torch.Tensor, dict]]:
    """The loss callable of ``run_online`` for the configured preference loss(es)."""
    terms = parse_loss_spec(config.loss)
    with_reference = uses_reference(terms)

    def loss_fn(
        out: dict, minibatch: Experience, cfg: OnlineDPOConfig, kl_coef: float
    ) -> tuple[torch.Tensor, dict]:
        mask = minibatch.response_mask.float()
        logps = (out["logprobs"] * mask).sum(-1).view(-1, 2)  # (pairs, 2)
        ref = (minibatch.ref_logprobs * mask).sum(-1).view(-1, 2)
        lengths = mask.sum(-1).view(-1, 2)
        first = minibatch.extras["first_wins"].view(-1, 2)[:, 0]
        decided = minibatch.extras["decided"].view(-1, 2)[:, 0].float()
        chosen = torch.where(first, 0, 1)[:, None]
        rejected = 1 - chosen
        losses, metrics = combined_preference_loss(
            terms,
            policy_chosen_logps=logps.gather(1, chosen).squeeze(1),
            policy_rejected_logps=logps.gather(1, rejected).squeeze(1),
            ref_chosen_logps=ref.gather(1, chosen).squeeze(1) if with_reference else None,
            ref_rejected_logps=ref.gather(1, rejected).squeeze(1) if with_reference else None,
            chosen_lengths=lengths.gather(1, chosen).squeeze(1),
            rejected_lengths=lengths.gather(1, rejected).squeeze(1),
            beta=config.beta,
            label_smoothing=config.label_smoothing,
            gamma=config.gamma,
        )
        metrics["pairs/decided"] = decided.mean()
        return (losses * decided).sum() / decided.sum().clamp(min=1.0), metrics

    return loss_fn


def run_online_dpo(config: OnlineDPOConfig) -> dict[str, float]:
    """Run online DPO; returns the last step's metrics."""
    if config.group_size != 2:
        from tether.config import ConfigError

        raise ConfigError("field 'group_size': online DPO samples exactly 2 responses per prompt (a pair)")
    return run_online(config, "none", label_pairs, make_online_dpo_loss(config))
