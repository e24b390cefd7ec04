"""Critic-free policy gradients: REINFORCE, RLOO, GRPO (and Dr. GRPO, REINFORCE++).

All estimate ∇J = E[Â·∇log π(y|x)] (the log-derivative trick, Monte-Carlo over samples) and differ only
in the baseline that Â subtracts:

- ``reinforce_baseline``: a moving average of past returns (Williams 1992);
- ``rloo``: the mean score of the other G − 1 samples of the same prompt (Ahmadian et al. 2024);
- ``grpo``: the group's mean, divided by the group's std (Shao et al. 2024); ``dr_grpo`` without the std
  (Liu et al. 2025);
- ``reinforce_pp``: reward-to-go normalised over the whole batch (Hu 2025).

With one epoch the ratio π_θ/π_old is 1 and the clipped loss is plain REINFORCE; more epochs reuse the
samples with PPO's clip. KL to the reference is either in the reward (score − β·Σ_t KL_t, k1) or, as in
GRPO, a loss term β·KL (``losses/policy.py: kl_penalty_loss``, whose gradient is ∇KL(π ‖ π_ref) with
any estimator). No estimator's advantages are whitened unless ``whiten_advantages`` asks: a batch-wide
whitening would shift RLOO's and Dr. GRPO's zero-sum groups by a length-weighted mean. The shared loop is
in ``online.py``.
"""

from __future__ import annotations

import torch

from tether.advantages import compute_advantages, whiten_advantages
from tether.algorithms.actor_loss import regularised
from tether.algorithms.online import run_online
from tether.algorithms.online_batch import LoopHooks
from tether.config import ConfigError, PGConfig
from tether.losses.policy import aggregate, ppo_clip_loss
from tether.losses.variants import (
    dynamic_sampling_mask,
    gspo_loss,
    gspo_token_loss,
    truncated_importance_weights,
)
from tether.rollout.experience import Experience

SEQUENCE_LEVEL = {"rloo", "grpo", "dr_grpo"}  # estimators that compare whole-response scores in a group


def pg_advantages(experience: Experience, config: PGConfig, state: dict[str, float]) -> None:
    """Advantages of the configured estimator; sequence-level ones see score − β·Σ_t KL_t per response.
    ``state`` carries REINFORCE's moving-average baseline from one iteration to the next."""
    mask = experience.response_mask
    if config.estimator in SEQUENCE_LEVEL:
        scores = experience.rewards.sum(-1)  # the score plus the (negative) KL shaping of the whole response
        advantages, returns = compute_advantages(
            config.estimator, scores=scores, response_mask=mask, group_size=config.group_size
        )
    elif config.estimator == "reinforce_baseline":
        advantages, returns, baseline = compute_advantages(
            "reinforce_baseline",
            token_rewards=experience.rewards,
            response_mask=mask,
            baseline=state["baseline"],
        )
        state["baseline"] = float(baseline)
    else:
        advantages, returns = compute_advantages(
            config.estimator, token_rewards=experience.rewards, response_mask=mask
        )
    if config.whiten_advantages:  # off by default: each estimator's paper gives its advantages unwhitened
        advantages = whiten_advantages(advantages, mask)
    experience.advantages, experience.returns = advantages, returns


def clip_range(config: PGConfig) -> tuple[float, float]:
    """(ε_low, ε_high) of the configured policy loss: the user's, else the loss's paper defaults (PPO's 0.2;
    GSPO's 3e-4 and 4e-4, at the scale of a per-token geometric-mean ratio)."""
    sequence_level = config.policy_loss in ("gspo", "gspo_token")  # seq_clip's ratio is not normalised
    low = config.clip_eps if config.clip_eps is not None else (3e-4 if sequence_level else 0.2)
    if config.clip_eps_high is not None:
        return low, config.clip_eps_high
    return low, (4e-4 if sequence_level and config.clip_eps is None else low)


def pg_loss(out: dict, minibatch: Experience, config: PGConfig, kl_coef: float) -> tuple[torch.Tensor, dict]:
    """The configured policy loss (ρ = 1 on-policy) − ent_coef·entropy (+ β·KL as a loss term, GRPO's way):

    - ``ppo_clip``: −min(ρ_t Â, clip(ρ_t, 1 − ε_low, 1 + ε_high) Â) per token (DAPO's decoupled range when
      ε_high > ε_low);
    - ``gspo``: GSPO's per-response ratio s_i = (π_θ/π_old)^{1/|y_i|}, clipped per response; each response's
      loss stands on each of its tokens, so ``loss_agg`` weighs responses (``seq_mean_token_mean``: the
      paper's mean over responses; ``token_mean``: by length);
    - ``gspo_token``: GSPO-token, s_i's value with each token's own gradient;
    - ``seq_clip``: the whole response's ratio π_θ(y|x)/π_old(y|x), clipped per response (TRL's RLOO);
      aggregated as GSPO's.
    """
    low, high = clip_range(config)
    logprobs, old, mask = out["logprobs"], minibatch.old_logprobs, minibatch.response_mask
    advantages = minibatch.advantages
    if config.policy_loss in ("gspo", "seq_clip"):
        per_response, metrics = gspo_loss(
            logprobs, old, advantages, mask, low, high, "none", config.policy_loss == "gspo"
        )
        per_token = per_response[:, None].expand_as(logprobs)
    elif config.policy_loss == "gspo_token":
        per_token, metrics = gspo_token_loss(logprobs, old, advantages, mask, low, high, "none")
    else:
        per_token, metrics = ppo_clip_loss(logprobs, old, advantages, mask, low, high, loss_agg="none")
    if config.tis_cap > 0:  # the samples came from another engine: weigh by min(π_train/π_rollout, C)
        rollout = torch.where(torch.isnan(minibatch.rollout_logprobs), old, minibatch.rollout_logprobs)
        weights, mismatch = truncated_importance_weights(old, rollout, mask, config.tis_cap, config.tis_level)
        per_token = per_token * weights
        metrics.update(mismatch)
    policy_loss = aggregate(per_token, mask, config.loss_agg)
    return regularised(policy_loss, metrics, out, minibatch, config, kl_coef)


def run_policy_gradient(config: PGConfig) -> dict[str, float]:
    """Run REINFORCE / RLOO / GRPO (by ``config.estimator``); returns the last iteration's metrics."""
    if config.estimator in SEQUENCE_LEVEL and config.group_size < 2 and config.estimator != "dr_grpo":
        raise ConfigError(
            f"field 'group_size': {config.estimator} compares samples of a prompt; use at least 2"
        )
    if config.tis_cap > 0 and config.rollout_backend == "hf":
        raise ConfigError(
            "field 'tis_cap': the built-in sampler's log-probs are the trainer's own (nothing to correct); "
            "truncated importance sampling needs rollout_backend=vllm"
        )
    state = {"baseline": 0.0}
    hooks = LoopHooks(state=state)
    if config.dynamic_sampling:
        hooks.keep = lambda experience: dynamic_sampling_mask(experience.scores, config.group_size)
        hooks.max_resamples = config.max_resamples
    return run_online(
        config, "none", lambda experience, cfg: pg_advantages(experience, cfg, state), pg_loss, hooks
    )
