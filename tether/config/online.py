"""The configs of the online stages: sample from the current policy, score, update (``algorithms/online.py``)."""

from __future__ import annotations

from typing import Literal

from tether.config.loader import defaults, option
from tether.config.sections import (
    GoldConfig,
    KLConfig,
    ModelConfig,
    NucleusConfig,
    PreferenceLossConfig,
    PromptsConfig,
    TrainConfig,
)

# Fields every online config inherits from TrainConfig that mean nothing in the loop: refused when set.
NOT_ONLINE = {
    "num_epochs": "online stages run max_steps iterations, each on a fresh batch (ppo_epochs passes over it)",
    "eval_every": "online stages do not evaluate during training (gold=… scores every batch; `tether "
    "compare` evaluates the saved policy)",
    "eval_batch_size": "online stages do not evaluate during training",
    "torch_compile": "online stages sample with the model they train, and every new cache length of "
    "generation would be a new graph to compile",
}
# The tether of the stages whose loss holds the KL term itself: kl_in_reward (and there kl_coef) refused.
LOSS_HOLDS_KL = "the {what} holds the tether to the reference"


def not_policy_gradient(what: str, adaptive_beta: bool = False) -> dict[str, str]:
    """The fields of the policy-gradient losses (PPO's clip, the entropy bonus, whitened advantages, the
    token aggregation) that a stage whose loss is ``what`` never reads; with ``adaptive_beta``, also the
    adaptive β (``target_kl``, ``kl_horizon``), for a stage without the loop's β."""
    why = f"the {what} has no advantages, ratio clipping, entropy bonus or token aggregation"
    fields = {name: why for name in ("clip_eps", "ent_coef", "whiten_advantages", "loss_agg")}
    fields["minibatch_order"] = f"the {what} reads whole groups: its minibatches never split one"
    if adaptive_beta:
        fields |= {name: LOSS_HOLDS_KL.format(what=what) for name in ("target_kl", "kl_horizon")}
    return fields


@defaults(
    output_dir="runs/rl",
    n_prompts=2048,
    max_new_tokens=48,
    max_steps=60,
    batch_size=32,
    learning_rate=3e-4,
    warmup_ratio=0.0,
    lr_scheduler="constant",
    log_every=1,
    minimums={"max_steps": 1},
    unused=NOT_ONLINE,
)
class RLConfig(KLConfig, GoldConfig, NucleusConfig, PromptsConfig, TrainConfig, ModelConfig):
    """Online regularised reward maximisation: sample, score, reward − β·KL, advantages, update."""

    reward: str = option(
        "runs/reward_model", "The reward: a reward-model folder, 'gym:TASK' or 'module:function'."
    )
    group_size: int = option(
        1,
        "Samples per prompt (G): RLOO and GRPO compare within a group; online DPO's pair; Nash-MD's player "
        "and opponent; DPG normalises importance weights within it.",
        minimum=1,
    )
    env: str = option(
        "",
        "Multi-turn episodes with an environment, a built-in name ('calculator') or module:Class; the sum "
        "of its rewards is the score, in place of `reward`. '' = one response scored by `reward`.",
    )
    max_turns: int = option(4, "env: policy turns per episode at most.", minimum=1)
    rollout_backend: Literal["hf", "vllm"] = option(
        "hf", "Sampler: transformers generate, or vLLM (GPU machines with vllm installed)."
    )
    vllm_gpu_memory_utilization: float = option(
        0.4, "Share of GPU memory the vLLM engine may take (it shares the GPU with training).", minimum=0.0
    )
    unfinished_penalty: float = option(
        1.0,
        "Subtracted from the score of a response that never stopped (so truncation never pays); with a "
        "pairwise judge an unfinished response loses to a finished one. 0 = no penalty.",
        minimum=0.0,
    )
    ppo_epochs: int = option(
        2, "Passes over each batch of experience (K; 1 = on-policy, the ratio stays 1).", minimum=1
    )
    minibatch_size: int = option(
        16, "Rows per gradient step within an epoch, rounded down to whole groups.", minimum=1
    )
    minibatch_order: Literal["groups", "rows"] = option(
        "groups",
        "How an epoch's minibatches are drawn: whole groups (a prompt's G samples together) in random "
        "order, or rows shuffled across prompts (as TRL's trainers draw them). Advantages are computed on "
        "whole groups first, so both are exact.",
    )
    clip_eps: float = option(0.2, "PPO's clip range ε for the ratio π/π_old.", minimum=0.0)
    ent_coef: float = option(0.0, "Entropy bonus weight.", minimum=0.0)
    whiten_advantages: bool = option(
        False,
        "Normalise advantages over the batch's tokens ((Â − mean)/std; PPO's default, not RLOO's or GRPO's).",
    )
    loss_agg: Literal["token_mean", "seq_mean_token_sum", "seq_mean_token_mean"] = option(
        "token_mean", "How per-token losses are averaged."
    )


@defaults(output_dir="runs/ppo", kl_coef=0.2, whiten_advantages=True, learning_rate=5e-5)
class PPOConfig(RLConfig):
    """PPO with a value function (the lecture's design: a linear head on the policy's hidden states)."""

    critic: Literal["head", "model"] = option(
        "head", "Value function: a head on the policy, or a separate critic."
    )
    vf_coef: float = option(0.1, "Value-loss weight.", minimum=0.0)
    value_clip: float = option(0.2, "Clip the value update around the old values (0 = off).", minimum=0.0)
    gamma: float = option(1.0, "Discount γ.", minimum=0.0)
    lam: float = option(0.95, "GAE λ.", minimum=0.0)


@defaults(
    output_dir="runs/grpo", group_size=4, batch_size=8, ppo_epochs=1, kl_in_reward=False, kl_estimator="k3"
)
class PGConfig(RLConfig):
    """Critic-free policy gradients: REINFORCE with a moving-average baseline, RLOO, GRPO, Dr. GRPO, REINFORCE++."""

    estimator: Literal["reinforce_baseline", "rloo", "grpo", "dr_grpo", "reinforce_pp"] = option(
        "grpo", "Advantage estimator (tether/advantages.py)."
    )
    policy_loss: Literal["ppo_clip", "gspo", "gspo_token", "seq_clip"] = option(
        "ppo_clip",
        "ppo_clip: per-token ratio, clipped per token (PPO, GRPO; DAPO with clip_eps_high); gspo: one "
        "length-normalised ratio per response, clipped per response (Zheng et al. 2025); gspo_token: "
        "GSPO's ratio with per-token advantages; seq_clip: the whole response's ratio, clipped per "
        "response (TRL's RLOO; with loss_agg=seq_mean_token_mean its loss is a mean over responses).",
    )
    # The one field declared again: its type differs (unset = the policy_loss's own range).
    clip_eps: float | None = option(
        None, "Lower clip range ε (ratio ≥ 1 − ε); unset = 0.2 (ppo_clip) or 3e-4 (GSPO).", minimum=0.0
    )
    clip_eps_high: float | None = option(
        None,
        "Upper clip range ε_high (ratio ≤ 1 + ε_high; DAPO's clip-higher uses 0.28); unset = clip_eps, or "
        "4e-4 for GSPO.",
        minimum=0.0,
    )
    dynamic_sampling: bool = option(
        False,
        "DAPO's dynamic sampling: drop groups whose scores are all equal (they give no gradient) and sample "
        "further prompts to refill the batch, up to max_resamples extra rounds.",
    )
    max_resamples: int = option(
        3, "dynamic_sampling: extra sampling rounds per iteration at most.", minimum=0
    )
    tis_cap: float = option(
        0.0,
        "Truncated importance sampling for rollouts from another engine (rollout_backend=vllm): weigh each "
        "token's loss by min(π_train/π_rollout, cap); 0 = off.",
        minimum=0.0,
    )
    tis_level: Literal["token", "sequence"] = option(
        "token", "tis_cap: the ratio of each token, or of the whole response."
    )


@defaults(
    output_dir="runs/online_dpo",
    group_size=2,
    batch_size=16,
    minibatch_size=32,
    ppo_epochs=1,
    learning_rate=1e-4,
    kl_in_reward=False,
    kl_coef=0.0,
    minimums={"group_size": 2, "minibatch_size": 2},
    unused={
        "kl_in_reward": LOSS_HOLDS_KL.format(what="preference loss (its β)"),
        "kl_coef": LOSS_HOLDS_KL.format(what="preference loss (its β)"),
        **not_policy_gradient("preference loss (its β)", adaptive_beta=True),
    },
)
class OnlineDPOConfig(PreferenceLossConfig, RLConfig):
    """Online DPO: each step, sample two responses per prompt from the current policy, let the judge pick
    the better, and apply a loss of the preference registry."""


@defaults(
    output_dir="runs/dpg",
    group_size=4,
    batch_size=8,
    minibatch_size=32,
    learning_rate=1e-4,
    kl_in_reward=False,
    kl_coef=0.0,
    minimums={"group_size": 2},
    unused={
        "kl_in_reward": LOSS_HOLDS_KL.format(what="target p* (its β)"),
        "kl_coef": LOSS_HOLDS_KL.format(what="target p* (its β)"),
        **not_policy_gradient("target p* (its β)", adaptive_beta=True),
    },
)
class DistributionMatchingConfig(RLConfig):
    """DPG and BRAIn: fit π_θ to p*(y|x) ∝ π_ref(y|x)·exp(r(x, y)/β) from G samples per prompt."""

    method: Literal["dpg", "brain"] = option("dpg", "The estimator of losses/distribution.py.")
    proposal: Literal["on_policy", "adaptive"] = option(
        "on_policy", "q = the current policy, or a frozen copy moved to π_θ only when π_θ is closer to p*."
    )
    proposal_criterion: Literal["kl", "tvd"] = option(
        "kl", "adaptive: compare π_θ and q by the estimated KL(p* ‖ ·) or TV distance to p*."
    )
    beta: float = option(0.5, "β of the target p* ∝ π_ref·exp(r/β) (the reward's temperature).", minimum=0.0)


@defaults(
    output_dir="runs/nash_md",
    group_size=2,
    batch_size=16,
    minibatch_size=32,
    learning_rate=1e-4,
    kl_in_reward=False,
    minimums={"group_size": 2, "minibatch_size": 2},
    unused={
        "kl_in_reward": LOSS_HOLDS_KL.format(what="Nash-MD loss (its KL term, kl_coef)"),
        **{
            name: "the Nash-MD loss has no advantages, entropy bonus or token aggregation"
            for name in ("ent_coef", "whiten_advantages", "loss_agg")
        },
        "minibatch_order": "the Nash-MD loss reads a player's response with its opponent's: whole groups",
    },
)
class NashMDConfig(RLConfig):
    """Nash-MD: play against an opponent, with P(y ≻ y') from a judge as the reward, regularised towards π_ref."""

    preference_scale: float = option(
        1.0,
        "P(y ≻ y') = σ((r(y) − r(y'))/scale) from a scalar judge's scores (a pairwise judge gives P itself).",
        minimum=0.0,
    )
    opponent: Literal["mixture", "self", "past"] = option(
        "mixture",
        "mixture: y' from π^{1−β}·π_ref^β token by token (the paper's Nash-MD); self: a second sample of π; "
        "past: a sample of a uniform mixture of past policies (fictitious self-play).",
    )
    past_pool_size: int = option(
        4, "past: how many past policies the opponent mixes (oldest dropped).", minimum=1
    )
    snapshot_every: int = option(
        10, "past: add the current policy to the pool every N iterations.", minimum=1
    )
    mixture_coef: float = option(
        0.5, "β of the mixture opponent (0 = self-play, 1 = the reference).", minimum=0.0
    )
