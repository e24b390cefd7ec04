"""The configs of the commands that sample, score, judge or evaluate (no training), and of the pipeline and
frontier that chain stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tether.config.loader import defaults, option
from tether.config.sections import (
    BestOfConfig,
    GoldConfig,
    InferenceBatchConfig,
    NucleusConfig,
    OutputConfig,
    OutputDirConfig,
    PolicyConfig,
    PromptsConfig,
    RankingConfig,
    RemoteCodeConfig,
    RunConfig,
    ScoringConfig,
)


@dataclass
class GymTaskConfig:
    """The gym task a command works on."""

    task: str = option("reviews", "The gym task (eval: the one whose held-out data is used).")


@dataclass
class PolicyEvalConfig:
    """How the policies a command trains are measured."""

    n_policy_prompts: int = option(
        200, "Held-out prompts on which each policy's gold reward and KL are measured.", minimum=1
    )


@defaults(output_dir="runs/collect", judge="gym:reviews", n_prompts=512, batch_size=64)
class CollectConfig(
    RunConfig,
    InferenceBatchConfig,
    RankingConfig,
    NucleusConfig,
    PromptsConfig,
    ScoringConfig,
    PolicyConfig,
    OutputDirConfig,
):
    """Sample K responses per prompt from a policy, rank them with a judge, write rankings and pairs."""

    split: Literal["train", "eval", "test"] = option("train", "Which of a gym task's prompt splits to use.")


@defaults(output="runs/best_of_n.jsonl", n_prompts=128, n=8, batch_size=64)
class BestOfNConfig(
    RunConfig,
    InferenceBatchConfig,
    BestOfConfig,
    PromptsConfig,
    GoldConfig,
    ScoringConfig,
    PolicyConfig,
    OutputConfig,
):
    """Best-of-n sampling: draw n responses per prompt, keep the judge's favourite."""


@defaults()
class ScoreConfig(RemoteCodeConfig, InferenceBatchConfig, OutputConfig, ScoringConfig):
    """Score a JSONL of (prompt, completion) with a reward model or judge."""

    data: str = option("", "Input records with 'prompt' and 'completion'.")


@defaults(batch_size=8)
class JudgeConfig(RunConfig, InferenceBatchConfig):
    """An LLM judge (RLAIF): give the path of a YAML file of these fields wherever a judge or reward is
    asked for (``judge=…``, ``reward=…``)."""

    model: str = option("smollm2", "The judge model (HF folder, .gguf, or 'smollm2').")
    kind: Literal["pairwise", "pointwise"] = option(
        "pairwise", "pairwise: multiple-choice (A)/(B); pointwise: a 1–10 rating."
    )
    constitution: str = option(
        "builtin:reviews", "Principles: a YAML file, or 'builtin:NAME' (reviews, harmless)."
    )
    principle_mode: Literal["all", "sample"] = option(
        "all", "Average over every principle, or sample one per judgement."
    )
    swap: bool = option(True, "Pairwise: judge both orders and average (cancels position bias).")
    chat_template: bool = option(True, "Ask the question as a user turn of the judge's chat template.")


@defaults(judge="")
class JudgeAgreementConfig(RunConfig, OutputConfig, ScoringConfig):
    """How often a judge agrees with gold labels on held-out pairs, with and without order swapping."""

    pairs: str = option("", "Pairs (prompt, chosen, rejected); chosen is the label unless 'gold' is set.")
    gold: str = option("", "Relabel the pairs with this judge (e.g. 'gym:reviews'); gold ties are dropped.")
    n_pairs: int = option(200, "How many pairs to use.", minimum=1)


@defaults(output_dir="runs/critique_revise", n_prompts=64, max_new_tokens=96, temperature=0.7, batch_size=16)
class CritiqueReviseConfig(RunConfig, InferenceBatchConfig, PromptsConfig, OutputDirConfig):
    """Constitutional AI's supervised phase: sample, self-critique by a principle, revise; keep revisions."""

    model: str = option(
        "smollm2", "The model that answers, critiques and revises (HF folder, .gguf, 'smollm2')."
    )
    constitution: str = option("builtin:reviews", "Principles with critique and revision requests.")
    revisions: int = option(1, "Critique–revision rounds per response.", minimum=1)


@defaults(
    n_prompts=64,
    unused={
        "prompts": "eval answers its task's held-out prompts (n_prompts of them)",
        "temperature": "eval decodes greedily",
    },
)
class EvalConfig(RunConfig, OutputConfig, InferenceBatchConfig, PromptsConfig, GymTaskConfig):
    """Evaluate a model on a gym task's held-out examples and prompts."""

    model: str = option("runs/sft", "The model to evaluate (HF folder, .gguf, or 'smollm2').")
    n_examples: int = option(200, "Held-out examples for response log-likelihood.", minimum=1)


@defaults(policy="runs/dpo", judge="gym:reviews", n_prompts=128)
class CompareConfig(
    RunConfig, OutputConfig, InferenceBatchConfig, PromptsConfig, ScoringConfig, PolicyConfig
):
    """Compare a policy with its reference on held-out prompts: gold reward, win rate, KL, diversity."""

    reference: str = option(
        "runs/sft", "The reference it started from (win rate and KL are measured against it)."
    )


@defaults(output_dir="runs/pipeline")
class PipelineConfig(PolicyEvalConfig, GymTaskConfig, OutputDirConfig):
    """Pre-train → SFT → collect → reward model → DPO, PPO and GRPO (and an RNN LM) → evaluate on a gym task."""

    seed: int = option(0, "Seed for every stage.")
    seeds: int = option(
        1,
        "Run the policy-optimisation stages (DPO, PPO, GRPO, PPO with β = 0) and their evaluation for this many "
        "seeds (seed, seed+1, …; the first in the usual folders, the others under seedN/); the report gives "
        "mean ± std and every seed's point. Pre-training, SFT, collection and the reward model run once.",
        minimum=1,
    )
    from_stage: str = option(
        "",
        "Re-run this stage and every later one ('' = run only the stages not done yet; `--from STAGE` on "
        "the command line).",
    )
    pretrain: dict = option({}, "Overrides for the pretrain stage, e.g. pretrain.max_steps=100.")
    sft: dict = option({}, "Overrides for the sft stage, e.g. sft.learning_rate=5e-4.")
    collect: dict = option({}, "Overrides for the collect stage, e.g. collect.n_prompts=256.")
    reward_model: dict = option({}, "Overrides for the reward-model stage, e.g. reward_model.num_epochs=1.")
    dpo: dict = option({}, "Overrides for the DPO stage, e.g. dpo.beta=0.2 or dpo.loss=ipo.")
    ppo: dict = option({}, "Overrides for the PPO stage, e.g. ppo.kl_coef=0.2.")
    grpo: dict = option({}, "Overrides for the GRPO stage, e.g. grpo.group_size=8.")
    ppo_no_kl: dict = option({}, "Overrides for the β = 0 PPO run that shows reward hacking in the report.")
    pretrain_rnn: dict = option(
        {},
        "Overrides for the RNN language model of the report's ladder (pre-trained on the same corpus with "
        "pretrain's tokenizer; 100 steps by default), e.g. pretrain_rnn.max_steps=300 or pretrain_rnn.rnn_cell=gru.",
    )
    evaluate: dict = option({}, "Overrides for evaluation, e.g. evaluate.n_prompts=32.")


@defaults()
class FrontierConfig(PolicyEvalConfig, GymTaskConfig):
    """Gold reward against KL for several methods at several KL budgets (a β sweep) over seeds, with
    best-of-n's analytic-KL curve as the reference; methods compared at matched KL."""

    output_dir: str = option(
        "runs/pipeline",
        "The pipeline folder: its pretrain, sft, collect and reward_model stages are used (run first if missing); "
        "the frontier's runs, frontier.jsonl and frontier.md/.html go in its frontier/ sub-folder.",
    )
    seed: int = option(0, "First seed; the upstream stages use it.")
    seeds: int = option(3, "Seeds per (method, β): seed, seed+1, …", minimum=1)
    methods: str = option(
        "ppo,grpo,rloo,dpo",
        "Comma-separated methods among ppo, grpo, rloo, dpo (each from the pipeline's SFT model).",
    )
    betas: str = option(
        "0.4,0.2,0.1,0.05",
        "Comma-separated β values (the KL budgets): kl_coef of ppo/grpo/rloo, beta of dpo.",
    )
    best_of_n: str = option(
        "1,2,4,8,16", "Comma-separated n of the best-of-n reference curve (picked by the reward model)."
    )
    kl_points: str = option(
        "2,4,6", "Comma-separated KLs (nats per response) at which the report compares methods' gold reward."
    )
    kl_budget: float = option(
        5.0,
        "The report's budget: per method and seed, the best gold reward among runs with KL ≤ this, and the share "
        "of the gap between the SFT policy's gold and the task's maximum (1) that it closes.",
        minimum=0.0,
    )
    ppo: dict = option(
        {},
        "Overrides for the PPO runs, over the frontier's critic=model, max_steps=150, e.g. ppo.max_steps=40 "
        "(β comes from betas).",
    )
    grpo: dict = option({}, "Overrides for the GRPO runs.")
    rloo: dict = option({}, "Overrides for the RLOO runs (GRPO's config with estimator=rloo).")
    dpo: dict = option({}, "Overrides for the DPO runs.")
