"""A peer on the same task: TRL's GRPOTrainer, RLOOTrainer and DPOTrainer trained from a tether pipeline's
SFT model, on its gym prompts and (GRPO, RLOO) its reward model, at the pipeline's settings, and every
trained policy measured by tether's own evaluator (``eval/policy.py: evaluate_policy``), over seeds.

Which answer does a user get from TRL, and which from tether, when both are given the same job? The
speed benchmarks (``grpo_vs_trl.py``, ``dpo_vs_trl.py``) ask how fast; this one asks how good: gold reward
(the task's hidden judge), KL(π ‖ π_SFT), proxy reward (the pipeline's reward model) and win rate against
the SFT model's samples, on the same held-out prompts, with the same sampling seed.

Usage (TRL is a benchmark dependency, never a test or runtime one)::

    .venv/bin/pip install "trl>=1.16"
    .venv/bin/tether pipeline                         # makes runs/pipeline (sft, reward_model, collect, …)
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 .venv/bin/python benchmarks/trl_peer.py \\
        --pipeline runs/pipeline --seeds 0,1,2 --methods grpo,rloo,dpo --with-tether

    # a smoke run: two iterations (optimiser steps for DPO) per run, 8 evaluation prompts
    benchmarks/trl_peer.py --pipeline /tmp/peer_smoke --seeds 0,1 --max-steps 2 --n-prompts 8 --with-tether

Options: ``--betas`` overrides the pipeline's β (``0.2`` for every method, ``grpo=0.2,dpo=0.1`` per method,
several values to sweep: ``0.05,0.1``); ``--max-steps`` overrides the pipeline's number of iterations (GRPO,
RLOO) or optimiser steps (DPO); ``--n-prompts`` sets the held-out evaluation prompts (200, as the
pipeline); ``--with-tether`` also runs tether's own stage at the same settings; ``--tether-rloo-objective
trl`` makes tether's RLOO optimise TRL's RLOO objective (below) instead of the pipeline's.

Each (library, method, β, seed) trains and is evaluated in its own process (``--run``, as the other
benchmarks: no shared state, no import order effects), into ``ROOT/peer/{trl,tether}/METHOD/seedS``
(``METHOD/beta{β}/seedS`` for a β other than the pipeline's); its result is appended to
``ROOT/peer/results.jsonl`` and a re-run skips what is there. The SFT model itself is measured once per
seed (library ``sft``): its samples are what the win rates are against. ``ROOT/peer/peer.md`` gets a table
per method (library | gold | KL | win rate | proxy | train seconds, mean ± sample std over seeds) and every
seed's row. Train seconds: the whole training call, model loading and tokenisation included, imports
excluded, as in the speed benchmarks.

What each run starts from is the pipeline stage's own saved config (``ROOT/grpo/tether_config.yaml``,
``ROOT/dpo/tether_config.yaml``; ``tether.pipeline.stage_configs`` when a stage has not run), with the seed,
the output folder and the overrides above changed; RLOO is the GRPO stage's config with
``estimator=rloo`` (as ``tether frontier`` builds it).

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
  sampling policy) and takes one ratio per response, its loss averaged over responses (a sum over tokens);
  the pipeline's RLOO (GRPO's settings, ``estimator=rloo``) has the KL as a β·k3 loss term and a per-token
  ratio averaged over tokens. ``--tether-rloo-objective trl`` runs tether with TRL's objective instead
  (``kl_in_reward=true, kl_estimator=k1, loss_agg=seq_mean_token_sum``); only the clipping of later
  minibatches (per token, not per response) then differs.
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

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("grpo", "rloo", "dpo")
LIBRARIES = ("tether", "trl")
LABELS = {
    "sft": "SFT model",
    "tether": "tether",
    "trl": "TRL",
    "tether-trlobj": "tether (TRL's RLOO objective)",
}


# ---------------------------------------------------------------------------------------------- settings


def parse_betas(text: str | None, methods: list[str]) -> dict[str, list[float | None]]:
    """``--betas``: per method, the β values to run (None = the pipeline's)."""
    chosen: dict[str, list[float | None]] = {m: [] for m in methods}
    common: list[float] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            method, value = item.split("=", 1)
            if method.strip() not in METHODS:
                sys.exit(f"--betas: unknown method {method!r}; choose among {', '.join(METHODS)}")
            if method.strip() in chosen:
                chosen[method.strip()].append(float(value))
        else:
            common.append(float(item))
    return {m: chosen[m] or common or [None] for m in methods}


def stage_bases(pipeline: Path) -> dict[str, Any]:
    """The pipeline's GRPO and DPO stage configs (as saved by the run; the pipeline's defaults for a stage
    that has not run), and RLOO: GRPO's with ``estimator=rloo``."""
    from tether.config import DPOConfig, PGConfig, PipelineConfig, build_config
    from tether.pipeline import stage_configs
    from tether.specs import saved_stage_config

    defaults = stage_configs(PipelineConfig(output_dir=str(pipeline)))
    bases = {}
    for name, cls in (("grpo", PGConfig), ("dpo", DPOConfig)):
        saved = saved_stage_config(str(pipeline / name))
        bases[name] = build_config(cls, saved, where=str(pipeline / name)) if saved else defaults[name]
    bases["rloo"] = dataclasses.replace(bases["grpo"], estimator="rloo")
    return bases


def run_folder(pipeline: Path, library: str, method: str, beta: float | None, seed: int) -> Path:
    name = method if beta is None else f"{method}/beta{beta:g}"
    return pipeline / "peer" / library / name / f"seed{seed}"


def run_config(args: argparse.Namespace, method: str, beta: float | None, seed: int, folder: Path) -> Any:
    """The tether stage config of one run: the pipeline's, at ``seed``, in ``folder``, with the overrides."""
    base = stage_bases(Path(args.pipeline))[method]
    changes: dict[str, Any] = {
        "seed": seed,
        "output_dir": str(folder),
        "progress": False,
        "tensorboard": False,
    }
    if args.max_steps:
        changes["max_steps"] = args.max_steps
    if beta is not None:
        changes["beta" if method == "dpo" else "kl_coef"] = beta
    if method == "rloo" and args.tether_rloo_objective == "trl":
        changes.update(kl_in_reward=True, kl_estimator="k1", loss_agg="seq_mean_token_sum")
    return dataclasses.replace(base, **changes)


def resolved_beta(config: Any, method: str) -> float:
    if method != "dpo":
        return float(config.kl_coef)
    if config.beta is not None:
        return float(config.beta)
    import inspect

    from tether.losses.preference import PREFERENCE_LOSSES

    return float(inspect.signature(PREFERENCE_LOSSES["dpo"]).parameters["beta"].default)


def task_of(config: Any) -> str:
    spec = config.prompts if hasattr(config, "prompts") else "gym:reviews"
    return spec.split(":", 1)[1] if spec.startswith("gym:") else "reviews"


# ------------------------------------------------------------------------------------------------- TRL


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


def run_trl_online(method: str, config: Any, out: Path) -> None:
    """TRL's GRPOTrainer or RLOOTrainer at ``config``'s settings (module docstring), the model saved in ``out``."""
    import datasets
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from tether.algorithms.online_batch import rows_per_minibatch
    from tether.algorithms.policy_gradient import clip_range
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


# ------------------------------------------------------------------------------------------- one run


def evaluation_context(args: argparse.Namespace) -> dict[str, Any]:
    """What every policy is measured with, as the pipeline measures it: the SFT model (reference), its
    tokenizer, the gold judge, the reward model (proxy) and the held-out prompts of the pipeline's seed."""
    from tether.gym import get_task
    from tether.models import load_causal_lm, load_tokenizer
    from tether.specs import resolve_judge

    grpo = stage_bases(Path(args.pipeline))["grpo"]
    task = task_of(grpo)
    return {
        "reference": load_causal_lm(grpo.model),
        "tokenizer": load_tokenizer(grpo.model),
        "gold": resolve_judge(grpo.gold or f"gym:{task}", grpo.seed),
        "proxy": resolve_judge(grpo.reward),
        "prompts": get_task(task, seed=grpo.seed).prompts("eval", n=args.n_prompts),
    }


def measure(policy: Any, context: dict[str, Any], seed: int) -> dict[str, Any]:
    from tether.eval.policy import evaluate_policy

    metrics = evaluate_policy(
        policy,
        context["reference"],
        context["tokenizer"],
        context["gold"],
        context["prompts"],
        proxy=context["proxy"],
        seed=seed,
    )
    keep = ("gold", "kl", "proxy", "length", "stop_rate", "distinct_2", "gold_scores")
    return {k: metrics[k] for k in keep}


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """``--run LIBRARY:METHOD:SEED[:BETA]``: train (unless LIBRARY is sft) and measure; the result record."""
    library, method, seed_text, *rest = args.run.split(":")
    seed, beta = int(seed_text), (float(rest[0]) if rest and rest[0] else None)
    # Everything either library imports, off the clock for both.
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import tether.algorithms.dpo
    import tether.algorithms.policy_gradient  # noqa: F401

    if library == "trl":
        import trl  # noqa: F401

    record: dict[str, Any] = {"library": library, "method": method, "seed": seed, **settings_key(args)}
    if library == "sft":
        context = evaluation_context(args)
        return {**record, **measure(context["reference"], context, seed), "train_seconds": 0.0}

    folder = run_folder(Path(args.pipeline), library_folder(library, method, args), method, beta, seed)
    config = run_config(args, method, beta, seed, folder)
    if folder.exists():  # an unfinished run (a finished one is in results.jsonl and is not re-run)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    if library == "tether":
        from tether.pipeline import _runners

        _runners()["dpo" if method == "dpo" else "grpo"](config)
    elif method == "dpo":
        run_trl_dpo(config, folder)
    else:
        run_trl_online(method, config, folder)
    seconds = time.perf_counter() - started

    from tether.models import load_causal_lm, load_tokenizer

    steps = config.max_steps
    if method == "dpo" and not steps:
        steps = dpo_steps(config, len(dpo_training_pairs(config, load_tokenizer(config.model))))
    context = evaluation_context(args)
    metrics = measure(load_causal_lm(str(folder)), context, seed)
    return {
        **record,
        "beta_arg": beta,
        "beta": resolved_beta(config, method),
        "iterations": steps,
        "folder": str(folder),
        **metrics,
        "train_seconds": seconds,
    }


def library_folder(library: str, method: str, args: argparse.Namespace) -> str:
    return (
        "tether-trlobj"
        if library == "tether" and method == "rloo" and args.tether_rloo_objective == "trl"
        else library
    )


def settings_key(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a result was measured at beyond (library, method, seed, β): a re-run with other ones
    does not count it as done."""
    return {"max_steps_arg": args.max_steps or None, "n_prompts": args.n_prompts}


# ----------------------------------------------------------------------------------------------- driver


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def key_of(record: dict[str, Any]) -> tuple:
    return (
        record["library"],
        record["method"],
        record["seed"],
        record.get("beta_arg"),
        record.get("max_steps_arg"),
        record.get("n_prompts"),
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    from tether.eval.aggregate import mean_std as tether_mean_std

    return tether_mean_std(values)


def fmt(values: list[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def win_rates(records: list[dict[str, Any]], sft: dict[int, dict[str, Any]]) -> None:
    from tether.eval.metrics import win_rate

    for r in records:
        if r["seed"] in sft:
            r["win_rate"] = win_rate(r["gold_scores"], sft[r["seed"]]["gold_scores"])


def write_report(args: argparse.Namespace, records: list[dict[str, Any]], out: Path) -> Path:
    """``peer.md``: a table per method and β (mean ± std over seeds, then every seed's row)."""
    here = settings_key(args)
    current = [
        r for r in records if all(r.get(k) == v for k, v in here.items()) and r["seed"] in args.seed_list
    ]
    sft = {r["seed"]: r for r in current if r["library"] == "sft"}
    win_rates(current, sft)
    lines = [
        f"# A peer on the same task: TRL vs tether from `{args.pipeline}`",
        "",
        f"Seeds {', '.join(map(str, args.seed_list))}; {args.n_prompts} held-out prompts, one sample each "
        "(tether's `evaluate_policy`): gold reward (the task's hidden judge), KL(π ‖ π_SFT) per response "
        "(nats), win rate against the SFT model's samples under the gold judge (ties ½), proxy reward "
        "(the pipeline's reward model). Train seconds: the training call (model loading included). "
        f"Iterations: {'the pipeline' + chr(39) + 's' if not args.max_steps else args.max_steps}. "
        "Mean ± sample std over seeds. Settings mapping: `benchmarks/trl_peer.py`.",
        "",
    ]
    if sft:
        s = list(sft.values())
        lines += [
            f"SFT model: gold {fmt([r['gold'] for r in s])}, proxy {fmt([r['proxy'] for r in s])}.",
            "",
        ]
    for method in args.method_list:
        rows = [r for r in current if r["method"] == method]
        for beta in sorted({r["beta"] for r in rows}):
            at = [r for r in rows if r["beta"] == beta]
            iterations = sorted({r["iterations"] for r in at})
            lines += [
                f"## {method.upper()}, β = {beta:g}, {'/'.join(map(str, iterations))} "
                f"{'optimiser steps' if method == 'dpo' else 'iterations'}",
                "",
                "| library | gold | KL | win rate | proxy | train seconds |",
                "|---|---|---|---|---|---|",
            ]
            libraries = [
                lib for lib in ("tether", "tether-trlobj", "trl") if any(r["library"] == lib for r in at)
            ]
            for lib in libraries:
                mine = [r for r in at if r["library"] == lib]
                lines.append(
                    f"| {LABELS[lib]} | {fmt([r['gold'] for r in mine])} | {fmt([r['kl'] for r in mine], 2)} "
                    f"| {fmt([r['win_rate'] for r in mine if 'win_rate' in r], 2) if sft else '–'} "
                    f"| {fmt([r['proxy'] for r in mine])} | {fmt([r['train_seconds'] for r in mine], 1)} |"
                )
            lines += [
                "",
                "| library | seed | gold | KL | win rate | proxy | train seconds |",
                "|---|---|---|---|---|---|---|",
            ]
            for lib in libraries:
                for r in sorted((r for r in at if r["library"] == lib), key=lambda r: r["seed"]):
                    win = f"{r['win_rate']:.2f}" if "win_rate" in r else "–"
                    lines.append(
                        f"| {LABELS[lib]} | {r['seed']} | {r['gold']:.3f} | {r['kl']:.2f} | {win} "
                        f"| {r['proxy']:.3f} | {r['train_seconds']:.1f} |"
                    )
            lines.append("")
    path = out / "peer.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=str(ROOT / "runs/pipeline"), help="the pipeline folder (ROOT)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--betas", default=None, help="0.2 | grpo=0.2,dpo=0.1 | 0.05,0.1 (default: the pipeline's)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=0, help="iterations (GRPO, RLOO) / steps (DPO); 0 = pipeline's"
    )
    parser.add_argument("--n-prompts", type=int, default=200, help="held-out evaluation prompts")
    parser.add_argument("--with-tether", action="store_true", help="also run tether's own stage")
    parser.add_argument("--tether-rloo-objective", choices=("pipeline", "trl"), default="pipeline")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := [m for m in args.method_list if m not in METHODS]:
        sys.exit(f"--methods: unknown {unknown}; choose among {', '.join(METHODS)}")

    if args.run:  # one run, in this process; its record is the last line
        record = run_one(args)
        print(json.dumps(record))
        return

    out = Path(args.pipeline) / "peer"
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    passthrough = [a for a in sys.argv[1:]]
    betas = parse_betas(args.betas, args.method_list)
    libraries = [*(["tether"] if args.with_tether else []), "trl"]
    todo = [("sft", "sft", seed, None) for seed in args.seed_list]
    todo += [
        (lib, method, seed, beta)
        for method in args.method_list
        for beta in betas[method]
        for seed in args.seed_list
        for lib in (libraries if seed % 2 == 0 else libraries[::-1])  # alternate who goes first
    ]
    here = settings_key(args)
    for library, method, seed, beta in todo:
        lib = library_folder(library, method, args)
        key = (
            lib,
            method,
            seed,
            beta if library != "sft" else None,
            here["max_steps_arg"],
            here["n_prompts"],
        )
        if key in {key_of(r) for r in read_results(results)}:
            print(f"done already: {lib} {method} seed {seed} β {beta}", flush=True)
            continue
        spec = f"{library}:{method}:{seed}:{'' if beta is None else beta}"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, *passthrough, "--run", spec],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"{spec} failed:\n{done.stderr[-4000:]}")
        record = json.loads(done.stdout.strip().splitlines()[-1])
        record["library"] = lib
        record["process_seconds"] = time.perf_counter() - started
        with results.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        print(
            f"{lib} {method} seed {seed}: gold {record['gold']:.3f}, KL {record['kl']:.2f}, "
            f"proxy {record['proxy']:.3f}, train {record['train_seconds']:.1f} s "
            f"(process {record['process_seconds']:.1f} s)",
            flush=True,
        )
    report = write_report(args, read_results(results), out)
    print(report.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
