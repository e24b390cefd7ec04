"""The shared sections of stage configs, each field declared once with one help text.

A stage config is composed of these (``offline.py``, ``online.py``, ``commands.py``) and changes their
defaults with ``@defaults(…)`` (``loader.py``), never by declaring a field again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tether.config.loader import option


@dataclass
class RemoteCodeConfig:
    """What every command that loads a model shares."""

    trust_remote_code: bool = option(
        False, "Allow model code from the model folder (off: only built-in models)."
    )


@dataclass
class RunConfig(RemoteCodeConfig):
    """What every command that loads a model and draws random numbers shares."""

    seed: int = option(
        0, "Seed for model init, data order, sampling and a gym task's prompts (and principles drawn)."
    )


@dataclass
class OutputDirConfig:
    """Where a command writes its results."""

    output_dir: str = option(
        "runs/stage",
        "Folder for the results: a trained model (a plain HF folder) with its logs and checkpoints (stages "
        "with rounds: a sub-folder per round, the last is the result); collect: rankings.jsonl and "
        "pairs.jsonl; critique_revise: sft.jsonl (the revisions) and trace.jsonl; pipeline: a sub-folder per "
        "stage and the report.",
    )


@dataclass
class OutputConfig:
    """Where a command writes its one result file."""

    output: str = option(
        "",
        "Where to write the result ('' = print only): best_of_n: the best completion of each prompt (JSONL); "
        "score: the records plus 'score' (JSONL; else a summary is printed); eval, compare, judge_agreement: "
        "the metrics as JSON.",
    )


@dataclass
class InferenceBatchConfig:
    """Batching of a command that samples or scores but does not train."""

    batch_size: int = option(
        32, "Rows (prompts, records, judge prompts) per generation or scoring batch.", minimum=1
    )


@dataclass
class PolicyConfig:
    """The policy a command samples from."""

    policy: str = option(
        "runs/sft", "The policy that samples (HF folder, .gguf, or 'smollm2'); compare: the aligned policy."
    )


@dataclass
class TrainConfig(RunConfig, OutputDirConfig):
    """Fields every training stage shares: optimisation, schedule, batching, logging, checkpoints."""

    learning_rate: float = option(1e-3, "Peak learning rate of AdamW.", minimum=0.0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = option("cosine", "Decay after warm-up.")
    warmup_ratio: float = option(
        0.05, "Fraction of steps (iterations) spent warming the learning rate up linearly.", minimum=0.0
    )
    min_lr_ratio: float = option(
        0.1, "Final learning rate as a fraction of the peak (cosine/linear).", minimum=0.0
    )
    weight_decay: float = option(0.0, "AdamW weight decay (not applied to biases and norms).", minimum=0.0)
    adam_beta1: float = option(0.9, "AdamW β1.", minimum=0.0)
    adam_beta2: float = option(0.999, "AdamW β2.", minimum=0.0)
    batch_size: int = option(
        16,
        "Offline: examples (packed blocks, pairs, labelled completions) per process per micro-batch. Online: "
        "prompts per iteration (B).",
        minimum=1,
    )
    grad_accum_steps: int = option(
        1,
        "Micro-batches accumulated into one optimiser step (online: minibatches, each weighed by its share of "
        "the loss items, so N minibatches of minibatch_size rows give the step of one of N·minibatch_size).",
        minimum=1,
    )
    max_steps: int = option(
        0,
        "Optimiser steps to run; 0 means num_epochs over the data. Online: iterations, each samples a batch "
        "and then updates the policy.",
        minimum=0,
    )
    num_epochs: float = option(1.0, "Passes over the training data when max_steps is 0.", minimum=0.0)
    max_grad_norm: float = option(
        1.0, "Clip the global gradient norm to this; 0 disables clipping.", minimum=0.0
    )
    eval_every: int = option(
        0, "Evaluate every N steps (and always at the end); 0 = only at the end.", minimum=0
    )
    eval_batch_size: int = option(32, "Examples per evaluation batch.", minimum=1)
    log_every: int = option(10, "Write metrics every N steps (and at the last).", minimum=1)
    save_every: int = option(0, "Write a resumable checkpoint every N steps; 0 = none.", minimum=0)
    keep_checkpoints: int = option(2, "How many recent checkpoints to keep.", minimum=1)
    resume: bool = option(False, "Continue from the latest checkpoint in output_dir.")
    tensorboard: bool = option(True, "Also log to TensorBoard (output_dir/tensorboard).")
    progress: bool = option(True, "Show a progress bar with loss, rate and ETA.")
    mixed_precision: Literal["no", "bf16", "fp16"] = option(
        "no", "Autocast precision of the training forwards (fp32 is fastest on CPU; fp16 needs a GPU)."
    )
    torch_compile: bool = option(
        False,
        "Compile the trained model's forward with torch.compile (inductor). Its graphs are cached on disk "
        "(TORCHINDUCTOR_CACHE_DIR) and reused by later runs of the same shapes; it pays on long runs "
        "(benchmarks/compile_break_even.md gives the break-even run length).",
    )
    nan_policy: Literal["stop", "skip"] = option(
        "stop",
        "On a non-finite loss or gradient norm: stop with an error before the update (finite checkpoints "
        "are kept), or skip that update and go on.",
    )
    max_nan_skips: int = option(
        10, "nan_policy=skip: stop once more updates than this were skipped.", minimum=0
    )
    report_to: str = option(
        "",
        "Also send every metrics row, and the config at the start, to these trackers: a comma list of "
        "wandb, mlflow, trackio (each must be installed); '' = none.",
    )


@dataclass
class ModelConfig(RunConfig):
    """Which model to start from, and LoRA."""

    model: str = option(
        "runs/sft",
        "The starting model: a HF folder, a .gguf file, or 'smollm2' (SmolLM2-135M-Instruct); for policy "
        "optimisation also the frozen reference (unless ref_model is set).",
    )
    lora: bool = option(False, "Train LoRA adapters instead of all weights (saved merged).")
    lora_r: int = option(16, "LoRA rank.", minimum=1)
    lora_alpha: int = option(32, "LoRA scaling α (the update is scaled by α/r).", minimum=1)
    lora_dropout: float = option(0.0, "Dropout on the LoRA path.", minimum=0.0)
    lora_target_modules: str = option("all-linear", "'all-linear' or comma-separated module names.")


@dataclass
class PromptsConfig:
    """Where prompts come from and how they are sampled."""

    prompts: str = option(
        "gym:reviews",
        "'gym:TASK' (its train prompts; evaluation commands: its eval prompts) or a file of {\"prompt\"} records.",
    )
    n_prompts: int = option(
        256, "How many prompts (training loops: per round, or the pool cycled through).", minimum=1
    )
    max_new_tokens: int = option(64, "Longest response (with env: longest policy turn).", minimum=1)
    temperature: float = option(
        1.0, "Sampling temperature (online: log-probs are taken at the same temperature).", minimum=0.0
    )


@dataclass
class NucleusConfig:
    """Nucleus sampling."""

    top_p: float = option(1.0, "Nucleus sampling mass.", minimum=0.0)


@dataclass
class ScoringConfig:
    """Who scores (or labels, or picks) responses."""

    judge: str = option(
        "runs/reward_model",
        "Scores, labels or picks responses: a reward-model folder, a judge YAML, 'gym:TASK' (gold reward) or "
        "'module:function'.",
    )


@dataclass
class GoldConfig:
    """A hidden judge, reported beside the one that is optimised or picks."""

    gold: str = option(
        "", "A hidden judge reported beside the judge or reward (e.g. 'gym:reviews'), never trained on."
    )


@dataclass
class RoundsConfig(PromptsConfig, ScoringConfig, GoldConfig):
    """Rounds of sampling from the current policy, judging, and training offline on the result."""

    rounds: int = option(
        3, "Rounds of sample → label or select → train, each in a sub-folder of output_dir.", minimum=1
    )


@dataclass
class RankingConfig:
    """K samples per prompt, ranked by a judge into pairs."""

    num_samples: int = option(
        4, "Responses sampled per prompt (K); every ordered pair the judge separates is a pair.", minimum=2
    )


@dataclass
class BestOfConfig:
    """Best-of-n selection."""

    n: int = option(4, "Samples per prompt; the judge's favourite is kept.", minimum=1)


@dataclass
class DataConfig:
    """The training data of an offline stage."""

    data: str = option(
        "runs/collect/rankings.jsonl",
        "Training data: 'gym:TASK' or a .jsonl/.json/.parquet file or datasets folder. pretrain: text; sft: "
        "text, prompt/completion or messages; reward_model and dpo: preference pairs or rankings; kto: "
        "unpaired {prompt, completion, label} records, or rankings (best completion up, worst down).",
    )


@dataclass
class EvalDataConfig:
    """Held-out data given apart from the training data."""

    eval_data: str = option(
        "",
        "Held-out data in the training data's formats; '' = sft: the gym task's eval split (or none), "
        "reward_model: eval_fraction of the records held out.",
    )


@dataclass
class LengthConfig:
    """How long a training example may be."""

    max_length: int = option(256, "Truncate each example (prompt, response) to this many tokens.", minimum=8)


@dataclass
class PairsConfig(LengthConfig):
    """How (prompt, response) examples are packed and batched for the offline preference stages."""

    pack_length: int = option(
        128,
        "Tokens per packed row (never less than the longest sequence): the sequences of one prompt (chosen "
        "and rejected) in one padding-free forward that computes their shared prompt once; 0 = pad each "
        "sequence.",
        minimum=0,
    )
    group_by_prompt: bool = option(
        False,
        "Batch a prompt's pairs together (InstructGPT's batching of a ranking's pairs): each prompt and "
        "each response is then computed once per batch.",
    )


@dataclass
class HeldOutConfig:
    """What an offline stage holds out for evaluation."""

    eval_fraction: float = option(
        0.05,
        "Fraction of the records (pretrain: packed blocks) held out for evaluation; with eval_data set "
        "(reward_model) none.",
        minimum=0.0,
    )


@dataclass
class PreferenceLossConfig:
    """A loss of the preference registry (offline and online DPO)."""

    loss: str = option("dpo", "A loss of losses/preference.py, or weighted terms like 'dpo:1,nll:0.2'.")
    beta: float | None = option(
        None,
        "β: strength of the tether to the reference (inverse temperature); unset = each loss's paper "
        "default (0.1 for DPO and most of the family, 2.0 for SimPO).",
        minimum=0.0,
    )
    label_smoothing: float = option(0.0, "ε: assumed label-noise rate (cdpo, robust, exo_pair).", minimum=0.0)
    gamma: float | None = option(
        None, "SimPO's target margin γ; unset = 1.0 (γ/β = 0.5 at SimPO's β = 2).", minimum=0.0
    )
    orpo_lambda: float | None = option(
        None, "ORPO's weight λ of the odds-ratio term against the NLL; unset = 0.1.", minimum=0.0
    )


@dataclass
class KLConfig:
    """The tether of an online stage to its reference: β·KL(π ‖ π_ref), fixed or adaptive."""

    kl_coef: float = option(0.05, "β: weight of KL(π ‖ π_ref) against the reward.", minimum=0.0)
    kl_estimator: Literal["k1", "k2", "k3"] = option(
        "k1",
        "Per-token estimate of KL(π ‖ π_ref): k1 = log-ratio (unbiased), k2 = half its square (biased, ≥ 0), "
        "k3 = e^(−ℓ) − 1 + ℓ (unbiased, ≥ 0; GRPO's). In the reward only k1 gives ∇KL(π ‖ π_ref) (k2 and k3 "
        "are refused there); as a loss term every estimator gives ∇KL(π ‖ π_ref), never the reverse "
        "KL(π_ref ‖ π) that differentiating k3 alone gives (losses/policy.py: kl_penalty_loss).",
    )
    kl_in_reward: bool = option(
        True, "Subtract β·KL from the per-token reward (else add β·KL to the loss, GRPO's β·KL term)."
    )
    target_kl: float = option(0.0, "Adapt β towards this KL per response (0 = fixed β).", minimum=0.0)
    kl_horizon: int = option(
        320,
        "Adaptive β: β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon) after n samples (Ziegler et al.'s "
        "rule); 320 moves β by up to 2 % per iteration of 32 samples.",
        minimum=1,
    )
