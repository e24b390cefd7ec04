"""Typed stage configs: one dataclass per stage, every field with help text (parsing: ``loader.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tether.config.loader import option


@dataclass
class TrainConfig:
    """Fields every training stage shares: optimisation, schedule, batching, logging, checkpoints."""

    output_dir: str = option(
        "runs/stage", "Folder for the trained model (a plain HF folder), logs and checkpoints."
    )
    seed: int = option(0, "Seed for model init, data order and sampling.")
    learning_rate: float = option(1e-3, "Peak learning rate of AdamW.", minimum=0.0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = option("cosine", "Decay after warm-up.")
    warmup_ratio: float = option(
        0.05, "Fraction of steps spent warming the learning rate up linearly.", minimum=0.0
    )
    min_lr_ratio: float = option(
        0.1, "Final learning rate as a fraction of the peak (cosine/linear).", minimum=0.0
    )
    weight_decay: float = option(0.0, "AdamW weight decay (not applied to biases and norms).", minimum=0.0)
    adam_beta1: float = option(0.9, "AdamW β1.", minimum=0.0)
    adam_beta2: float = option(0.999, "AdamW β2.", minimum=0.0)
    batch_size: int = option(16, "Examples per process per micro-batch.", minimum=1)
    grad_accum_steps: int = option(1, "Micro-batches accumulated into one optimiser step.", minimum=1)
    max_steps: int = option(0, "Optimiser steps to run; 0 means num_epochs over the data.", minimum=0)
    num_epochs: float = option(1.0, "Passes over the training data when max_steps is 0.", minimum=0.0)
    max_grad_norm: float = option(
        1.0, "Clip the global gradient norm to this; 0 disables clipping.", minimum=0.0
    )
    eval_every: int = option(
        0, "Evaluate every N steps (and always at the end); 0 = only at the end.", minimum=0
    )
    eval_batch_size: int = option(32, "Examples per evaluation batch.", minimum=1)
    log_every: int = option(10, "Write metrics every N steps.", minimum=1)
    save_every: int = option(0, "Write a resumable checkpoint every N steps; 0 = none.", minimum=0)
    keep_checkpoints: int = option(2, "How many recent checkpoints to keep.", minimum=1)
    resume: bool = option(False, "Continue from the latest checkpoint in output_dir.")
    tensorboard: bool = option(True, "Also log to TensorBoard (output_dir/tensorboard).")
    progress: bool = option(True, "Show a progress bar with loss, rate and ETA.")
    mixed_precision: Literal["no", "bf16", "fp16"] = option(
        "no", "Autocast precision of the training forwards (fp32 is fastest on CPU; fp16 needs a GPU)."
    )
    nan_policy: Literal["stop", "skip"] = option(
        "stop",
        "On a non-finite loss or gradient norm: stop with an error before the update (finite checkpoints "
        "are kept), or skip that update and go on.",
    )
    max_nan_skips: int = option(
        10, "nan_policy=skip: stop once more updates than this were skipped.", minimum=0
    )


@dataclass
class ModelConfig:
    """Which model to start from, and LoRA."""

    model: str = option("runs/pretrain", "A HF folder, a .gguf file, or 'smollm2' (SmolLM2-135M-Instruct).")
    trust_remote_code: bool = option(
        False, "Allow model code from the model folder (off: only built-in models)."
    )
    lora: bool = option(False, "Train LoRA adapters instead of all weights (saved merged).")
    lora_r: int = option(16, "LoRA rank.", minimum=1)
    lora_alpha: int = option(32, "LoRA scaling α (the update is scaled by α/r).", minimum=1)
    lora_dropout: float = option(0.0, "Dropout on the LoRA path.", minimum=0.0)
    lora_target_modules: str = option("all-linear", "'all-linear' or comma-separated module names.")


@dataclass
class PretrainConfig(TrainConfig):
    """Pre-training by next-token prediction on packed text."""

    output_dir: str = option("runs/pretrain", "Folder for the pre-trained model, logs and checkpoints.")
    model: str = option(
        "tiny", "'tiny' builds a new model from the fields below; or a HF folder to continue."
    )
    architecture: Literal["transformer", "rnn"] = option(
        "transformer",
        "The new model of model=tiny: a tiny Llama (hidden_size, num_layers, num_heads, intermediate_size) "
        "or a recurrent LM (rnn_cell, rnn_hidden_size, rnn_layers); each refuses the other's size fields. "
        "'rnn' with a model folder requires that folder to hold a tether RNN.",
    )
    data: str = option(
        "gym:reviews", "Training text: 'gym:TASK' or a .jsonl/.json/.parquet file or datasets folder."
    )
    text_field: str = option("text", "Field holding the text in each record.")
    seq_len: int = option(128, "Tokens per packed training block.", minimum=8)
    eval_fraction: float = option(0.02, "Fraction of packed blocks held out for evaluation.", minimum=0.0)
    tokenizer: str = option(
        "",
        "model=tiny: '' trains a BPE tokenizer of vocab_size on the corpus; or a model folder whose tokenizer "
        "to use (e.g. an RNN with the same tokenizer as a pre-trained Transformer). A model folder brings its own.",
    )
    vocab_size: int = option(
        512, "Tokenizer vocabulary (tiny model with tokenizer=''; trained on the corpus).", minimum=260
    )
    hidden_size: int = option(128, "Tiny Transformer width.", minimum=8)
    num_layers: int = option(4, "Tiny Transformer depth.", minimum=1)
    num_heads: int = option(4, "Tiny Transformer attention heads.", minimum=1)
    intermediate_size: int = option(384, "Tiny Transformer MLP width.", minimum=8)
    rnn_cell: Literal["lstm", "gru"] = option("lstm", "Recurrent cell of architecture=rnn.")
    rnn_hidden_size: int = option(
        512,
        "RNN width: embedding and state size (architecture=rnn; tied input/output embeddings).",
        minimum=8,
    )
    rnn_layers: int = option(1, "Stacked recurrent layers (architecture=rnn).", minimum=1)
    trust_remote_code: bool = option(False, "Allow model code from the model folder.")
    learning_rate: float = option(3e-3, "Peak learning rate of AdamW.", minimum=0.0)
    batch_size: int = option(16, "Packed blocks per process per micro-batch.", minimum=1)
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and norms).", minimum=0.0)


@dataclass
class SFTConfig(ModelConfig, TrainConfig):
    """Supervised fine-tuning (instruction tuning) with loss on response tokens only."""

    output_dir: str = option("runs/sft", "Folder for the fine-tuned model, logs and checkpoints.")
    data: str = option(
        "gym:reviews", "SFT data: 'gym:TASK' or a file/folder (text, prompt/completion, messages)."
    )
    eval_data: str = option(
        "", "Held-out data in the same formats; '' = the gym task's eval split (or none)."
    )
    max_length: int = option(256, "Truncate examples to this many tokens.", minimum=8)
    learning_rate: float = option(1e-3, "Peak learning rate of AdamW.", minimum=0.0)
    num_epochs: float = option(1.0, "Passes over the training data when max_steps is 0.", minimum=0.0)


@dataclass
class CollectConfig:
    """Sample K responses per prompt from a policy, rank them with a judge, write rankings and pairs."""

    output_dir: str = option("runs/collect", "Folder for rankings.jsonl and pairs.jsonl.")
    policy: str = option("runs/sft", "The policy that samples (HF folder, .gguf, or 'smollm2').")
    judge: str = option(
        "gym:reviews", "'gym:TASK' (gold reward), 'module:function', or a reward-model folder."
    )
    prompts: str = option("gym:reviews", "'gym:TASK' (its train prompts) or a file of {\"prompt\"} records.")
    n_prompts: int = option(512, "How many prompts to use.", minimum=1)
    split: Literal["train", "eval", "test"] = option("train", "Which of a gym task's prompt splits to use.")
    num_samples: int = option(4, "Completions sampled per prompt (K).", minimum=2)
    temperature: float = option(1.0, "Sampling temperature.", minimum=0.0)
    top_p: float = option(1.0, "Nucleus sampling mass.", minimum=0.0)
    max_new_tokens: int = option(64, "Longest completion.", minimum=1)
    batch_size: int = option(64, "Prompts per generation batch.", minimum=1)
    seed: int = option(0, "Seed for sampling and the gym's prompts.")
    trust_remote_code: bool = option(False, "Allow model code from the model folder.")


@dataclass
class RewardModelConfig(ModelConfig, TrainConfig):
    """A reward model: the LM with a scalar head, trained by Bradley–Terry maximum likelihood."""

    output_dir: str = option("runs/reward_model", "Folder for the reward model, logs and checkpoints.")
    model: str = option("runs/sft", "The LM whose backbone the reward model starts from.")
    data: str = option(
        "runs/collect/rankings.jsonl", "Preference data: pairs or rankings (JSONL/JSON/Parquet/folder)."
    )
    eval_data: str = option("", "Held-out preference data; '' = hold out eval_fraction of the records.")
    eval_fraction: float = option(0.1, "Fraction of records held out when eval_data is ''.", minimum=0.0)
    max_length: int = option(256, "Truncate (prompt, response) to this many tokens.", minimum=8)
    pack_length: int = option(
        128,
        "Tokens per packed row (never less than the longest sequence): chosen and rejected in one "
        "padding-free forward that computes their shared prompt once; 0 = pad each sequence.",
        minimum=0,
    )
    group_by_prompt: bool = option(
        False,
        "Batch a prompt's pairs together (InstructGPT's batching of a ranking's pairs): each prompt and "
        "each response is then computed once per batch.",
    )
    center_coef: float = option(0.0, "Reward-centering weight: + c·(r_w + r_l)² per pair.", minimum=0.0)
    pairwise: bool = option(
        False,
        "Train a two-argument preference model P(y ≻ y' | x) = σ(f(x, y, y') − f(x, y', y)) instead of a "
        "reward: it can represent non-transitive preferences (for Nash-MD).",
    )
    learning_rate: float = option(1e-3, "Peak learning rate of AdamW.", minimum=0.0)
    batch_size: int = option(16, "Pairs per process per micro-batch.", minimum=1)
    num_epochs: float = option(2.0, "Passes over the training pairs when max_steps is 0.", minimum=0.0)


@dataclass
class DPOConfig(ModelConfig, TrainConfig):
    """Offline preference optimisation: DPO and its family, from pairs or rankings, no sampling."""

    output_dir: str = option("runs/dpo", "Folder for the optimised policy, logs and checkpoints.")
    model: str = option("runs/sft", "The starting policy (and, unless ref_model is set, the reference).")
    ref_model: str = option(
        "", "A different frozen reference; '' = the starting model (with LoRA: adapters off)."
    )
    data: str = option(
        "runs/collect/rankings.jsonl", "Preference pairs or rankings (JSONL/JSON/Parquet/folder)."
    )
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
    max_length: int = option(256, "Truncate (prompt, response) to this many tokens.", minimum=8)
    pack_length: int = option(
        128, "Tokens per packed row (never less than the longest sequence); 0 = pad each sequence.", minimum=0
    )
    learning_rate: float = option(2e-4, "Peak learning rate of AdamW.", minimum=0.0)
    batch_size: int = option(16, "Pairs per process per micro-batch.", minimum=1)
    group_by_prompt: bool = option(
        False,
        "Batch a prompt's pairs together (InstructGPT's batching of a ranking's pairs): each prompt and "
        "each response is then computed once per batch.",
    )
    eval_fraction: float = option(0.05, "Fraction of records held out for evaluation.", minimum=0.0)


@dataclass
class KTOConfig(ModelConfig, TrainConfig):
    """KTO on unpaired thumbs-up/down data (or rankings: best completion up, worst down)."""

    output_dir: str = option("runs/kto", "Folder for the optimised policy, logs and checkpoints.")
    model: str = option("runs/sft", "The starting policy (and the reference).")
    data: str = option(
        "runs/collect/rankings.jsonl", "Unpaired {prompt, completion, label} records, or rankings."
    )
    beta: float = option(0.1, "β of KTO's value function.", minimum=0.0)
    desirable_weight: float = option(1.0, "λ_D: weight of desirable examples.", minimum=0.0)
    undesirable_weight: float = option(1.0, "λ_U: weight of undesirable examples.", minimum=0.0)
    max_length: int = option(256, "Truncate (prompt, response) to this many tokens.", minimum=8)
    pack_length: int = option(
        128, "Tokens per packed row (never less than the longest sequence); 0 = pad each sequence.", minimum=0
    )
    learning_rate: float = option(2e-4, "Peak learning rate of AdamW.", minimum=0.0)
    batch_size: int = option(
        16, "Examples per process per micro-batch (at least 2: KTO's reference point).", minimum=2
    )
    eval_fraction: float = option(0.05, "Fraction of records held out for evaluation.", minimum=0.0)


@dataclass
class RLConfig(ModelConfig, TrainConfig):
    """Online regularised reward maximisation: sample, score, reward − β·KL, advantages, update."""

    output_dir: str = option("runs/rl", "Folder for the optimised policy and its metrics.")
    model: str = option("runs/sft", "The starting policy; also the frozen reference.")
    reward: str = option(
        "runs/reward_model", "The reward: a reward-model folder, 'gym:TASK' or 'module:function'."
    )
    gold: str = option("", "A hidden judge logged beside the reward (e.g. 'gym:reviews'), never trained on.")
    prompts: str = option("gym:reviews", "'gym:TASK' (its train prompts) or a file of {\"prompt\"} records.")
    n_prompts: int = option(2048, "Size of the prompt pool, cycled through.", minimum=1)
    max_steps: int = option(60, "Iterations: each samples a batch, then updates the policy.", minimum=1)
    batch_size: int = option(32, "Prompts per iteration (B).", minimum=1)
    group_size: int = option(1, "Samples per prompt (G).", minimum=1)
    max_new_tokens: int = option(48, "Longest response (with env: longest policy turn).", minimum=1)
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
    temperature: float = option(
        1.0, "Sampling temperature (log-probs are taken at the same temperature).", minimum=0.0
    )
    top_p: float = option(1.0, "Nucleus sampling mass.", minimum=0.0)
    kl_coef: float = option(0.05, "β: weight of KL(π ‖ π_ref) against the reward.", minimum=0.0)
    kl_estimator: Literal["k1", "k2", "k3"] = option(
        "k1",
        "Per-token estimate of KL(π ‖ π_ref): k1 = log-ratio (unbiased), k2 = half its square (biased, ≥ 0), "
        "k3 = e^(−ℓ) − 1 + ℓ (unbiased, ≥ 0). In the reward only k1 gives ∇KL(π ‖ π_ref) (k2 and k3 are "
        "refused there); as a loss term every estimator gives ∇KL(π ‖ π_ref), never the reverse "
        "KL(π_ref ‖ π) that differentiating k3 alone gives (losses/policy.py: kl_penalty_loss).",
    )
    kl_in_reward: bool = option(True, "Subtract β·KL from the per-token reward (else add β·KL to the loss).")
    target_kl: float = option(0.0, "Adapt β towards this KL per response (0 = fixed β).", minimum=0.0)
    kl_horizon: int = option(
        320,
        "Adaptive β: β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon) after n samples (Ziegler et al.'s "
        "rule); 320 moves β by up to 2 % per iteration of 32 samples.",
        minimum=1,
    )
    unfinished_penalty: float = option(
        1.0,
        "Subtracted from the score of a response that never stopped (so truncation never pays); with a "
        "pairwise judge an unfinished response loses to a finished one. 0 = no penalty.",
        minimum=0.0,
    )
    ppo_epochs: int = option(2, "Passes over each batch of experience (K).", minimum=1)
    minibatch_size: int = option(16, "Rows per gradient step within an epoch.", minimum=1)
    clip_eps: float = option(0.2, "PPO's clip range ε for the ratio π/π_old.", minimum=0.0)
    ent_coef: float = option(0.0, "Entropy bonus weight.", minimum=0.0)
    whiten_advantages: bool = option(
        False,
        "Normalise advantages over the batch's tokens ((Â − mean)/std; PPO's default, not RLOO's or GRPO's).",
    )
    loss_agg: Literal["token_mean", "seq_mean_token_sum", "seq_mean_token_mean"] = option(
        "token_mean", "How per-token losses are averaged."
    )
    learning_rate: float = option(3e-4, "Peak learning rate of AdamW.", minimum=0.0)
    warmup_ratio: float = option(
        0.0, "Fraction of iterations spent warming the learning rate up.", minimum=0.0
    )
    lr_scheduler: Literal["cosine", "linear", "constant"] = option("constant", "Decay after warm-up.")
    grad_accum_steps: int = option(
        1,
        "Minibatches accumulated into one optimiser step, each weighed by its share of the loss items: N "
        "minibatches of minibatch_size rows give the step of one minibatch of N·minibatch_size rows.",
        minimum=1,
    )
    log_every: int = option(1, "Write metrics every N iterations (and at the last).", minimum=1)
    num_epochs: float = option(
        1.0,
        "Not used online (refused if set): max_steps iterations, ppo_epochs passes over each batch.",
        minimum=0.0,
    )
    eval_every: int = option(
        0,
        "Not used online (refused if set): no evaluation during training; gold=… scores every batch.",
        minimum=0,
    )
    eval_batch_size: int = option(
        32, "Not used online (refused if set): no evaluation during training.", minimum=1
    )


@dataclass
class PPOConfig(RLConfig):
    """PPO with a value function (the lecture's design: a linear head on the policy's hidden states)."""

    output_dir: str = option("runs/ppo", "Folder for the optimised policy and its metrics.")
    critic: Literal["head", "model"] = option(
        "head", "Value function: a head on the policy, or a separate critic."
    )
    kl_coef: float = option(0.2, "β: weight of KL(π ‖ π_ref) against the reward.", minimum=0.0)
    whiten_advantages: bool = option(
        True, "Normalise GAE advantages over the batch's tokens ((Â − mean)/std, as PPO implementations do)."
    )
    learning_rate: float = option(5e-5, "Peak learning rate of AdamW.", minimum=0.0)
    vf_coef: float = option(0.1, "Value-loss weight.", minimum=0.0)
    value_clip: float = option(0.2, "Clip the value update around the old values (0 = off).", minimum=0.0)
    gamma: float = option(1.0, "Discount γ.", minimum=0.0)
    lam: float = option(0.95, "GAE λ.", minimum=0.0)


@dataclass
class PGConfig(RLConfig):
    """Critic-free policy gradients: REINFORCE with a moving-average baseline, RLOO, GRPO, Dr. GRPO, REINFORCE++."""

    output_dir: str = option("runs/grpo", "Folder for the optimised policy and its metrics.")
    estimator: Literal["reinforce_baseline", "rloo", "grpo", "dr_grpo", "reinforce_pp"] = option(
        "grpo", "Advantage estimator (tether/advantages.py)."
    )
    group_size: int = option(4, "Samples per prompt (G); RLOO and GRPO compare within a group.", minimum=1)
    batch_size: int = option(8, "Prompts per iteration (B).", minimum=1)
    ppo_epochs: int = option(1, "Passes over each batch (1 = on-policy, the ratio stays 1).", minimum=1)
    policy_loss: Literal["ppo_clip", "gspo", "gspo_token"] = option(
        "ppo_clip",
        "ppo_clip: per-token ratio, clipped per token (PPO, GRPO; DAPO with clip_eps_high); gspo: one "
        "length-normalised ratio per response, clipped per response (Zheng et al. 2025); gspo_token: "
        "GSPO's ratio with per-token advantages.",
    )
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
    kl_in_reward: bool = option(False, "Subtract β·KL from the reward (else GRPO's β·KL loss term).")
    kl_estimator: Literal["k1", "k2", "k3"] = option(
        "k3",
        "Per-token KL estimator (k3: GRPO's); as a loss term each gives ∇KL(π ‖ π_ref), in the reward only k1 "
        "is allowed (see RLConfig's kl_estimator).",
    )


@dataclass
class OnlineDPOConfig(RLConfig):
    """Online DPO: each step, sample two responses per prompt from the current policy, let the judge pick
    the better, and apply a loss of the preference registry."""

    output_dir: str = option("runs/online_dpo", "Folder for the optimised policy and its metrics.")
    loss: str = option("dpo", "A loss of losses/preference.py, or weighted terms like 'dpo:1,nll:0.2'.")
    beta: float | None = option(
        None, "β of the preference loss; unset = each loss's paper default (0.1; SimPO 2.0).", minimum=0.0
    )
    label_smoothing: float = option(0.0, "ε: assumed label-noise rate (cdpo, robust).", minimum=0.0)
    gamma: float | None = option(None, "SimPO's target margin γ; unset = 1.0.", minimum=0.0)
    orpo_lambda: float | None = option(None, "ORPO's odds-ratio weight λ; unset = 0.1.", minimum=0.0)
    group_size: int = option(2, "Responses per prompt (the pair).", minimum=2)
    batch_size: int = option(16, "Prompts per step.", minimum=1)
    minibatch_size: int = option(32, "Rows per gradient step (whole pairs).", minimum=2)
    ppo_epochs: int = option(1, "Passes over each batch.", minimum=1)
    kl_in_reward: bool = option(False, "Unused: the preference loss holds the tether to the reference.")
    kl_coef: float = option(0.0, "Unused by the preference loss; kept 0.", minimum=0.0)
    learning_rate: float = option(1e-4, "Peak learning rate of AdamW.", minimum=0.0)


@dataclass
class IterativeDPOConfig(DPOConfig):
    """Iterative DPO: rounds of sample K per prompt from the current policy → label with a judge → DPO."""

    output_dir: str = option(
        "runs/iterative_dpo", "Folder with one sub-folder per round; the last is the result."
    )
    judge: str = option(
        "runs/reward_model", "Labels the pairs: a reward model, a judge YAML, 'gym:TASK', 'module:function'."
    )
    gold: str = option("", "A hidden judge reported each round (e.g. 'gym:reviews').")
    prompts: str = option("gym:reviews", "'gym:TASK' (its train prompts) or a file of {\"prompt\"} records.")
    rounds: int = option(3, "Rounds of sample → label → DPO.", minimum=1)
    n_prompts: int = option(256, "Prompts sampled per round (fresh ones each round).", minimum=1)
    num_samples: int = option(
        2, "Responses per prompt; every ordered pair the judge separates is used.", minimum=2
    )
    max_new_tokens: int = option(64, "Longest response.", minimum=1)
    temperature: float = option(1.0, "Sampling temperature.", minimum=0.0)
    reference: Literal["initial", "previous"] = option(
        "initial", "The DPO reference of each round: the starting model, or the previous round's policy."
    )
    data: str = option("", "Unused: each round collects its own pairs.")
    eval_fraction: float = option(0.0, "Fraction of each round's pairs held out.", minimum=0.0)


@dataclass
class DistributionMatchingConfig(RLConfig):
    """DPG and BRAIn: fit π_θ to p*(y|x) ∝ π_ref(y|x)·exp(r(x, y)/β) from G samples per prompt."""

    output_dir: str = option("runs/dpg", "Folder for the optimised policy and its metrics.")
    method: Literal["dpg", "brain"] = option("dpg", "The estimator of losses/distribution.py.")
    proposal: Literal["on_policy", "adaptive"] = option(
        "on_policy", "q = the current policy, or a frozen copy moved to π_θ only when π_θ is closer to p*."
    )
    proposal_criterion: Literal["kl", "tvd"] = option(
        "kl", "adaptive: compare π_θ and q by the estimated KL(p* ‖ ·) or TV distance to p*."
    )
    beta: float = option(0.5, "β of the target p* ∝ π_ref·exp(r/β) (the reward's temperature).", minimum=0.0)
    group_size: int = option(
        4, "Samples per prompt; importance weights are normalised within a prompt.", minimum=2
    )
    batch_size: int = option(8, "Prompts per iteration.", minimum=1)
    minibatch_size: int = option(32, "Rows per gradient step (whole groups).", minimum=1)
    kl_in_reward: bool = option(False, "Unused: p* holds the tether to the reference.")
    kl_coef: float = option(0.0, "Unused (the target's β plays its part); kept 0.", minimum=0.0)
    learning_rate: float = option(1e-4, "Peak learning rate of AdamW.", minimum=0.0)


@dataclass
class NashMDConfig(RLConfig):
    """Nash-MD: play against an opponent, with P(y ≻ y') from a judge as the reward, regularised towards π_ref."""

    output_dir: str = option("runs/nash_md", "Folder for the optimised policy and its metrics.")
    kl_coef: float = option(0.05, "τ: weight of KL(π ‖ π_ref).", minimum=0.0)
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
    group_size: int = option(2, "Player and opponent samples per prompt.", minimum=2)
    batch_size: int = option(16, "Prompts per iteration.", minimum=1)
    minibatch_size: int = option(32, "Rows per gradient step (whole groups).", minimum=2)
    kl_in_reward: bool = option(False, "Unused: the Nash-MD loss holds the KL term.")
    learning_rate: float = option(1e-4, "Peak learning rate of AdamW.", minimum=0.0)


@dataclass
class BestOfNConfig:
    """Best-of-n sampling: draw n responses per prompt, keep the judge's favourite."""

    output: str = option("runs/best_of_n.jsonl", "Where to write the best completion of each prompt.")
    policy: str = option("runs/sft", "The policy that samples.")
    judge: str = option(
        "runs/reward_model", "Picks the best: a reward-model folder, 'gym:TASK' or 'module:function'."
    )
    gold: str = option("", "A hidden judge to report beside the picking judge (e.g. 'gym:reviews').")
    prompts: str = option("gym:reviews", "'gym:TASK' (its eval prompts) or a file of {\"prompt\"} records.")
    n_prompts: int = option(128, "How many prompts.", minimum=1)
    n: int = option(8, "Samples per prompt.", minimum=1)
    max_new_tokens: int = option(64, "Longest completion.", minimum=1)
    temperature: float = option(1.0, "Sampling temperature.", minimum=0.0)
    batch_size: int = option(64, "Rows per generation batch.", minimum=1)
    seed: int = option(0, "Seed for sampling.")
    trust_remote_code: bool = option(False, "Allow model code from the model folder.")


@dataclass
class RFTConfig(SFTConfig):
    """Rejection-sampling fine-tuning: rounds of sample n → keep the best by a judge → SFT on them."""

    output_dir: str = option(
        "runs/rft", "Folder with one sub-folder per round; the last round is the result."
    )
    judge: str = option(
        "runs/reward_model", "Picks the best: a reward-model folder, 'gym:TASK' or 'module:function'."
    )
    gold: str = option("", "A hidden judge reported each round (e.g. 'gym:reviews').")
    prompts: str = option("gym:reviews", "'gym:TASK' (its train prompts) or a file of {\"prompt\"} records.")
    rounds: int = option(3, "Rounds of sample → select → fine-tune.", minimum=1)
    n_prompts: int = option(256, "Prompts sampled per round.", minimum=1)
    n: int = option(4, "Samples per prompt; the best one is kept.", minimum=1)
    max_new_tokens: int = option(64, "Longest completion.", minimum=1)
    temperature: float = option(1.0, "Sampling temperature.", minimum=0.0)
    learning_rate: float = option(2e-4, "Peak learning rate of each round's SFT.", minimum=0.0)
    num_epochs: float = option(1.0, "SFT passes over each round's selected data.", minimum=0.0)


@dataclass
class ScoreConfig:
    """Score a JSONL of (prompt, completion) with a reward model or judge."""

    data: str = option("", "Input records with 'prompt' and 'completion'.")
    judge: str = option("runs/reward_model", "A reward-model folder, 'gym:TASK', or 'module:function'.")
    output: str = option("", "Output JSONL (input records plus 'score'); '' = print a summary only.")
    batch_size: int = option(32, "Records per batch.", minimum=1)
    trust_remote_code: bool = option(False, "Allow model code from the model folder.")


@dataclass
class JudgeConfig:
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
    batch_size: int = option(8, "Judge prompts per forward.", minimum=1)
    seed: int = option(0, "Seed for sampling principles.")
    trust_remote_code: bool = option(False, "Allow model code from the model folder.")


@dataclass
class JudgeAgreementConfig:
    """How often a judge agrees with gold labels on held-out pairs, with and without order swapping."""

    judge: str = option("", "The judge under test: a judge YAML, a reward-model folder, 'gym:TASK', …")
    pairs: str = option("", "Pairs (prompt, chosen, rejected); chosen is the label unless 'gold' is set.")
    gold: str = option("", "Relabel the pairs with this judge (e.g. 'gym:reviews'); gold ties are dropped.")
    n_pairs: int = option(200, "How many pairs to use.", minimum=1)
    seed: int = option(0, "Seed for which response of a pair is shown first.")
    output: str = option("", "Write the report as JSON here ('' = print only).")
    trust_remote_code: bool = option(False, "Allow model code from the model folder.")


@dataclass
class CritiqueReviseConfig:
    """Constitutional AI's supervised phase: sample, self-critique by a principle, revise; keep revisions."""

    output_dir: str = option("runs/critique_revise", "Folder for sft.jsonl (the revisions) and trace.jsonl.")
    model: str = option(
        "smollm2", "The model that answers, critiques and revises (HF folder, .gguf, 'smollm2')."
    )
    prompts: str = option("gym:reviews", "'gym:TASK' (its train prompts) or a file of {\"prompt\"} records.")
    n_prompts: int = option(64, "How many prompts.", minimum=1)
    constitution: str = option("builtin:reviews", "Principles with critique and revision requests.")
    revisions: int = option(1, "Critique–revision rounds per response.", minimum=1)
    max_new_tokens: int = option(96, "Longest response, critique or revision.", minimum=1)
    temperature: float = option(0.7, "Sampling temperature (0 = greedy).", minimum=0.0)
    batch_size: int = option(16, "Prompts per generation batch.", minimum=1)
    seed: int = option(0, "Seed for sampling and for the principle drawn for each prompt.")
    trust_remote_code: bool = option(False, "Allow model code from the model folder.")


@dataclass
class EvalConfig:
    """Evaluate a model on a gym task's held-out examples and prompts."""

    model: str = option("runs/sft", "The model to evaluate (HF folder, .gguf, or 'smollm2').")
    task: str = option("reviews", "The gym task whose held-out data is used.")
    seed: int = option(0, "Seed of the gym task.")
    n_examples: int = option(200, "Held-out examples for response log-likelihood.", minimum=1)
    n_prompts: int = option(64, "Held-out prompts answered by greedy decoding.", minimum=1)
    max_new_tokens: int = option(64, "Longest generated answer.", minimum=1)
    batch_size: int = option(32, "Examples per batch.", minimum=1)
    output: str = option("", "Write the metrics as JSON here ('' = print only).")
    trust_remote_code: bool = option(False, "Allow model code from the model folder.")


@dataclass
class CompareConfig:
    """Compare a policy with its reference on held-out prompts: gold reward, win rate, KL, diversity."""

    policy: str = option("runs/dpo", "The aligned policy (HF folder, .gguf, or 'smollm2').")
    reference: str = option(
        "runs/sft", "The reference it started from (win rate and KL are measured against it)."
    )
    judge: str = option(
        "gym:reviews", "The judge of quality: 'gym:TASK', a reward-model folder or 'module:function'."
    )
    prompts: str = option("gym:reviews", "'gym:TASK' (its eval prompts) or a file of {\"prompt\"} records.")
    n_prompts: int = option(128, "Held-out prompts, one sample each per model.", minimum=1)
    max_new_tokens: int = option(64, "Longest response.", minimum=1)
    temperature: float = option(1.0, "Sampling temperature.", minimum=0.0)
    batch_size: int = option(32, "Rows per generation batch.", minimum=1)
    seed: int = option(0, "Seed for sampling.")
    output: str = option("", "Write the comparison as JSON here ('' = print only).")
    trust_remote_code: bool = option(False, "Allow model code from the model folder.")


@dataclass
class PipelineConfig:
    """Pre-train → SFT → collect → reward model → DPO, PPO and GRPO (and an RNN LM) → evaluate on a gym task."""

    output_dir: str = option("runs/pipeline", "Folder holding one sub-folder per stage and the report.")
    task: str = option("reviews", "The gym task.")
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
    n_policy_prompts: int = option(
        200, "Held-out prompts on which each policy's gold reward and KL are measured."
    )
    evaluate: dict = option({}, "Overrides for evaluation, e.g. evaluate.n_prompts=32.")


@dataclass
class FrontierConfig:
    """Gold reward against KL for several methods at several KL budgets (a β sweep) over seeds, with
    best-of-n's analytic-KL curve as the reference; methods compared at matched KL."""

    output_dir: str = option(
        "runs/pipeline",
        "The pipeline folder: its pretrain, sft, collect and reward_model stages are used (run first if missing); "
        "the frontier's runs, frontier.jsonl and frontier.md/.html go in its frontier/ sub-folder.",
    )
    task: str = option("reviews", "The gym task.")
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
    n_policy_prompts: int = option(
        200, "Held-out prompts on which gold reward and KL are measured.", minimum=1
    )
    ppo: dict = option({}, "Overrides for the PPO runs, e.g. ppo.max_steps=40 (β comes from betas).")
    grpo: dict = option({}, "Overrides for the GRPO runs.")
    rloo: dict = option({}, "Overrides for the RLOO runs (GRPO's config with estimator=rloo).")
    dpo: dict = option({}, "Overrides for the DPO runs.")
