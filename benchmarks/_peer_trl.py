"""The TRL side of ``trl_peer.py``: TRL 1.16's GRPOTrainer, RLOOTrainer and DPOTrainer at a tether stage's
settings, with tether's learning-rate schedule.

Setting mapping, tether → TRL 1.16 (field names from TRL's docs: https://huggingface.co/docs/trl/grpo_trainer
(GRPOConfig), https://huggingface.co/docs/trl/rloo_trainer (RLOOConfig), https://huggingface.co/docs/trl/
dpo_trainer (DPOConfig); shared ones from transformers' TrainingArguments):

GRPO and RLOO (``PGConfig``; B prompts × G samples per iteration, N = B·G rows, m rows per minibatch):

================================  ====================================================================
tether                            TRL
================================  ====================================================================
model (the SFT folder)            the same model and tokenizer objects, loaded by tether's loaders
prompts, n_prompts                ``train_dataset``: the same prompts (``specs.load_prompts``), in
                                  tether's order: ``shuffle_dataset=False``; one user turn each
                                  (conversational), so TRL applies the SFT model's chat template with
                                  ``add_generation_prompt`` exactly as ``data.templates.render_prompt``
reward (RM folder), its judge     ``reward_funcs``: the same ``RewardModelJudge.score`` on the prompt and
                                  the decoded completion, stripped as ``rollout.generate`` strips it
unfinished_penalty                in that reward function: − penalty when the completion has no stop token
                                  (TRL's ``completion_ids``, as tether's ``penalise_unfinished``)
stop tokens                       ``model.generation_config.eos_token_id`` := tether's stop ids
batch_size B, group_size G        ``num_generations=G``; generation batch N = ``per_device_train_batch_size``
                                  × ``steps_per_generation``
minibatch_size m                  ``per_device_train_batch_size=m`` (whole groups), ``steps_per_generation
                                  = N/m``
grad_accum_steps                  ``gradient_accumulation_steps``
ppo_epochs                        ``num_iterations``
max_steps (iterations)            ``max_steps`` = iterations × ppo_epochs × (N/m) / grad_accum_steps
                                  (TRL counts optimiser steps)
max_new_tokens                    ``max_completion_length``
temperature, top_p                ``temperature``, ``top_p``; ``top_k=0``, ``min_p=None``,
                                  ``repetition_penalty=1``
kl_coef β                         ``beta``
clip_eps (ε_low, ε_high)          ``epsilon``, ``epsilon_high``
loss_agg token_mean               GRPO: ``loss_type="bnpo"`` (mean over the minibatch's tokens; ``dapo`` when
                                  grad_accum_steps > 1); seq_mean_token_mean: ``"grpo"``
estimator grpo                    GRPOTrainer, ``scale_rewards="group"``
estimator rloo                    RLOOTrainer, ``normalize_advantages=False``
learning_rate, lr_scheduler,      ``learning_rate``, and tether's own schedule (``engine.optim.lr_multiplier``
warmup_ratio, min_lr_ratio        per iteration) as the trainer's LambdaLR
weight_decay, adam_beta1/2,       ``weight_decay``, ``adam_beta1``, ``adam_beta2``, ``max_grad_norm``
max_grad_norm                     (AdamW, ε = 1e-8 in both)
seed                              ``seed`` (TRL's sampling and shuffling RNG; tether's are its own)
fp32 on CPU                       ``use_cpu=True``, ``bf16=False``, ``gradient_checkpointing=False``
================================  ====================================================================

DPO (``DPOConfig``):

================================  ====================================================================
tether                            TRL
================================  ====================================================================
data (``collect/rankings.jsonl``) the same training pairs: tether's hold-out split (``eval_fraction``,
                                  ``offline.split_records``), its rankings → pairs (``load_pairs``), the
                                  pairs that fit max_length; as conversational prompt/chosen/rejected
loss dpo, beta (unset = 0.1)      ``loss_type=["sigmoid"]``, ``beta``
batch_size, grad_accum_steps      ``per_device_train_batch_size``, ``gradient_accumulation_steps``
max_steps / num_epochs            ``max_steps`` = tether's step count (num_epochs × ⌊pairs / batch⌋)
max_length                        ``max_length`` (``truncation_mode="keep_start"``)
learning_rate and schedule        ``learning_rate`` and tether's schedule (warm-up, cosine to
                                  min_lr_ratio) as the trainer's LambdaLR
reference log-probs, once         ``precompute_ref_log_probs=True``
others                            as for GRPO (AdamW, clipping, seed, fp32)
================================  ====================================================================

Not matched exactly (and why):

- **GRPO's KL gradient.** Both add β·k3 per token to the loss; TRL multiplies it by the (differentiable)
  ratio π_θ/π_old (``use_bias_correction_kl=True``, its default), which makes its gradient the exact
  per-state ∇KL_t(s_t). tether's ``kl_penalty_loss`` adds the score-function term for the states later
  tokens reach (Σ_{s≥t} k3_s ∇log π_t), which makes it ∇KL(π ‖ π_ref) of whole responses. TRL offers no
  such term.
- **RLOO's objective.** TRL's RLOOTrainer puts the KL in the reward (k1, summed per response, from the
  sampling policy) and takes one clipped ratio per whole response, its loss averaged over responses; the
  pipeline's RLOO (GRPO's settings, ``estimator=rloo``) has the KL as a β·k3 loss term and a per-token
  ratio averaged over tokens. ``--tether-rloo-objective trl`` runs tether with TRL's objective instead
  (``trl_peer.TRL_RLOO_OBJECTIVE``: ``kl_in_reward=true, kl_estimator=k1, policy_loss=seq_clip,
  loss_agg=seq_mean_token_mean``); only the minibatches then differ (below).
- **GRPO's advantage** divides by the group's std + 1e-4 in TRL, + 1e-6 in tether (both with Bessel's
  correction): only a group of near-equal scores tells them apart.
- **Minibatches.** tether's minibatches hold whole groups in random order; TRL shuffles rows, so a
  minibatch may split a group. The gradient of an iteration's first minibatch is the same in expectation.
- **DPO pair weights.** tether weighs a ranking's pairs 1/#pairs (renormalised to mean 1), so that a
  prompt whose completions tie counts as much as one without ties; TRL's pairs all weigh 1. They agree
  when no ranking has ties.
- **Data order and sampling.** Both libraries draw from their own random streams (tether's sampler and
  shuffles, TRL's ``seed``), so the same seed gives different samples and DPO batches: the comparison is
  over seeds, not run by run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def resolved_beta(config: Any, method: str) -> float:
    if method != "dpo":
        return float(config.kl_coef)
    if config.beta is not None:
        return float(config.beta)
    import inspect

    from tether.losses.preference import PREFERENCE_LOSSES

    return float(inspect.signature(PREFERENCE_LOSSES["dpo"]).parameters["beta"].default)


def refuse(what: str) -> None:
    raise SystemExit(f"trl_peer: {what} has no TRL counterpart in this mapping; leave it at the default")


def tether_schedule(trainer: Any, config: Any, iterations: int, steps_per_iteration: int) -> None:
    """Make the HF trainer use tether's learning-rate schedule: ``lr_multiplier`` of the iteration each
    optimiser step belongs to (one step per iteration for DPO), as a LambdaLR."""
    import torch

    from tether.engine.optim import lr_multiplier

    warmup = round(config.warmup_ratio * iterations)

    def multiplier(step: int) -> float:
        return lr_multiplier(
            min(step // steps_per_iteration, iterations - 1),
            iterations,
            warmup,
            config.lr_scheduler,
            config.min_lr_ratio,
        )

    def create_scheduler(num_training_steps: int, optimizer: Any = None) -> Any:
        if trainer.lr_scheduler is None:
            trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or trainer.optimizer, multiplier
            )
        return trainer.lr_scheduler

    trainer.create_scheduler = create_scheduler


def common_trl_args(config: Any, out: Path, max_steps: int) -> dict[str, Any]:
    """The TrainingArguments fields every TRL run shares: CPU, fp32, the optimiser's settings, the seed."""
    return {
        "output_dir": str(out),
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "max_steps": max_steps,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "constant",  # replaced by tether's schedule (tether_schedule)
        "weight_decay": config.weight_decay,
        "adam_beta1": config.adam_beta1,
        "adam_beta2": config.adam_beta2,
        "adam_epsilon": 1e-8,
        "max_grad_norm": config.max_grad_norm,
        "gradient_accumulation_steps": config.grad_accum_steps,
        "seed": config.seed,
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def policy_and_tokenizer(config: Any) -> tuple[Any, Any]:
    from tether.data.templates import ensure_chat_template
    from tether.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    ensure_chat_template(tokenizer)  # the template tether renders with, also when the folder has none
    return load_causal_lm(config.model, config.trust_remote_code), tokenizer


def trl_online_config(
    method: str, config: Any, out: Path, minibatch: int, minibatches: int, optimiser_steps: int
) -> tuple[Any, Any]:
    """The TRL trainer class and its config for GRPO or RLOO at ``config``'s settings (module docstring)."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from tether.algorithms.policy_gradient import clip_range

    low, high = clip_range(config)
    settings = {
        **common_trl_args(config, out, optimiser_steps),
        "per_device_train_batch_size": minibatch,
        "steps_per_generation": minibatches,
        "num_generations": config.group_size,
        "num_iterations": config.ppo_epochs,
        "max_completion_length": config.max_new_tokens,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "top_k": 0,
        "min_p": None,
        "repetition_penalty": 1.0,
        "beta": config.kl_coef,
        "epsilon": low,
        "epsilon_high": high,
        "shuffle_dataset": False,
    }
    if method == "grpo":
        agg = {
            "token_mean": "bnpo" if config.grad_accum_steps == 1 else "dapo",
            "seq_mean_token_mean": "grpo",
        }
        if config.loss_agg not in agg:
            refuse(f"loss_agg={config.loss_agg}")
        trainer_cls, trl_config = (
            GRPOTrainer,
            GRPOConfig(
                **settings, loss_type=agg[config.loss_agg], scale_rewards="group", use_bias_correction_kl=True
            ),
        )
    else:
        trainer_cls, trl_config = RLOOTrainer, RLOOConfig(**settings, normalize_advantages=False)
    return trainer_cls, trl_config


def run_trl_online(method: str, config: Any, out: Path) -> None:
    """TRL's GRPOTrainer or RLOOTrainer at ``config``'s settings (module docstring), the model saved in ``out``."""
    import datasets

    from tether.algorithms.online_batch import rows_per_minibatch
    from tether.rollout.generate import stop_token_ids
    from tether.specs import load_prompts, resolve_judge

    defaults = type(config)()
    for field in ("target_kl", "dynamic_sampling", "tis_cap", "whiten_advantages", "ent_coef", "lora", "env"):
        if getattr(config, field) != getattr(defaults, field):
            refuse(field)
    if config.policy_loss != "ppo_clip":
        refuse(f"policy_loss={config.policy_loss}")
    if method == "grpo" and (config.kl_in_reward or config.kl_estimator != "k3"):
        refuse("GRPO with the KL in the reward or another estimator than k3")
    rows = config.batch_size * config.group_size
    minibatch = min(rows, rows_per_minibatch(config.group_size, config.minibatch_size))
    if rows % minibatch or (rows // minibatch) % config.grad_accum_steps:
        raise SystemExit(
            f"trl_peer: {rows} rows per iteration must split into whole optimiser steps of "
            f"{minibatch} × {config.grad_accum_steps} rows"
        )
    minibatches = rows // minibatch
    iterations = config.max_steps
    optimiser_steps = iterations * config.ppo_epochs * minibatches // config.grad_accum_steps

    model, tokenizer = policy_and_tokenizer(config)
    stops = stop_token_ids(model, tokenizer)
    model.generation_config.eos_token_id = stops  # TRL stops (and masks) at these, as tether's sampler does
    judge = resolve_judge(config.reward, config.seed, config.trust_remote_code)
    prompts = load_prompts(config.prompts, min(config.n_prompts, iterations * config.batch_size), config.seed)
    dataset = datasets.Dataset.from_list(
        [{"prompt": [{"role": "user", "content": p}] if isinstance(p, str) else p} for p in prompts]
    )
    penalty, stop_set = config.unfinished_penalty, set(stops)

    def reward_model(prompts: list, completions: list, completion_ids: list, **_: Any) -> list[float]:
        asked = [p[0]["content"] if len(p) == 1 and p[0]["role"] == "user" else p for p in prompts]
        texts = [(c[-1]["content"] if isinstance(c, list) else c).strip() for c in completions]
        scores = judge.score(asked, texts)
        return [
            s - (penalty if not ids or ids[-1] not in stop_set else 0.0)
            for s, ids in zip(scores, completion_ids)
        ]

    trainer_cls, trl_config = trl_online_config(method, config, out, minibatch, minibatches, optimiser_steps)
    trainer = trainer_cls(
        model=model,
        reward_funcs=reward_model,
        args=trl_config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    tether_schedule(trainer, config, iterations, config.ppo_epochs * minibatches // config.grad_accum_steps)
    trainer.train()
    trainer.save_model(str(out))


def dpo_training_pairs(config: Any, tokenizer: Any) -> list[Any]:
    """The pairs tether's DPO stage trains on: its hold-out split, rankings → pairs, those that fit."""
    from tether.algorithms.dpo import tokenize_pair
    from tether.algorithms.offline import split_records
    from tether.data.preference import load_pairs
    from tether.specs import load_records

    train_records, _ = split_records(
        load_records(config.data, "preferences", config.seed), config.eval_fraction, config.seed
    )
    return [
        p for p in load_pairs(train_records) if tokenize_pair(tokenizer, p, config.max_length) is not None
    ]


def dpo_steps(config: Any, n_pairs: int) -> int:
    """tether's number of DPO optimiser steps: max_steps, else num_epochs × ⌊pairs / global batch⌋."""
    global_batch = config.batch_size * config.grad_accum_steps
    return config.max_steps or max(1, math.ceil(config.num_epochs * (n_pairs // global_batch)))


def run_trl_dpo(config: Any, out: Path) -> None:
    """TRL's DPOTrainer at ``config``'s settings (module docstring), the model saved in ``out``."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    if config.loss != "dpo" or config.label_smoothing or config.ref_model or config.lora:
        refuse("a DPO stage other than plain sigmoid DPO against the SFT model")
    model, tokenizer = policy_and_tokenizer(config)
    pairs = dpo_training_pairs(config, tokenizer)

    def turns(value: Any, role: str) -> list[dict[str, str]]:
        return [{"role": role, "content": value}] if isinstance(value, str) else list(value)

    rows = [
        {
            "prompt": turns(p.prompt, "user"),
            "chosen": turns(p.chosen, "assistant"),
            "rejected": turns(p.rejected, "assistant"),
        }
        for p in pairs
    ]
    steps = dpo_steps(config, len(rows))
    trl_config = DPOConfig(
        **common_trl_args(config, out, steps),
        per_device_train_batch_size=config.batch_size,
        beta=resolved_beta(config, "dpo"),
        loss_type=["sigmoid"],
        max_length=config.max_length,
        truncation_mode="keep_start",
        precompute_ref_log_probs=True,
    )
    trainer = DPOTrainer(
        model=model,
        args=trl_config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    tether_schedule(trainer, config, steps, 1)
    trainer.train()
    trainer.save_model(str(out))
