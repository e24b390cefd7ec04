"""The loop every online algorithm shares, in the lecture's order:

1. take B prompts, sample G responses each (``rollout.sample``) → N = B·G rows;
2. log π_old of the sampled tokens, V(s_t) if there is a value function, log π_ref from the frozen
   reference (with LoRA: the same model, adapters off);
3. score each response (reward model, gym judge or Python function); a response that never stopped
   loses ``unfinished_penalty`` from its score;
4. shaped reward r_t = −β·KL_t (+ score at the last token), or KL kept for a loss term
   (``losses/policy.py: kl_penalty_loss``);
5. advantages and returns — the part each algorithm defines (``advantage_fn``);
6. K epochs over minibatches of the batch: the algorithm's loss (``loss_fn``), backward, clip, step
   (no step on a non-finite loss or gradient: ``engine/guard.py``);
7. adapt β, log the same metric keys for every algorithm.

ppo.py and policy_gradient.py supply steps 5 and 6; everything else is here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from tether.algorithms.common import finish_policy, load_policy
from tether.config import ConfigError, RLConfig
from tether.data.packing import unshare
from tether.engine.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from tether.engine.guard import NanGuard
from tether.engine.logging import MetricLogger
from tether.engine.optim import build_optimizer, lr_multiplier, set_learning_rate
from tether.envs import resolve_env
from tether.losses.policy import entropy_bonus, kl_penalty_loss, ppo_clip_loss
from tether.models.forward import shares_prefixes, token_logprobs
from tether.models.lora import is_peft_model
from tether.models.save import check_finite_weights
from tether.models.value import PolicyValue
from tether.ops.kl import kl_estimate
from tether.ops.masked import masked_mean
from tether.rewards import CombinedReward
from tether.rewards.validation import check_scores
from tether.rollout.experience import Experience, concat, sample
from tether.rollout.multiturn import sample_episodes
from tether.rollout.rewards import AdaptiveKLController, penalise_unfinished, shaped_rewards
from tether.specs import load_prompts, resolve_judge

AdvantageFn = Callable[[Experience, RLConfig], None]
LossFn = Callable[[dict, Experience, RLConfig, float], tuple[torch.Tensor, dict[str, torch.Tensor]]]
OpponentFn = Callable[[Any, torch.Tensor], list]


@dataclass
class LoopHooks:
    """What an algorithm may add to the shared loop."""

    opponent: OpponentFn | None = None  # (reference, prompt mask) → logits processors (Nash-MD's mixture)
    proposal: Any = None  # a model sampled instead of π_θ; its log-probs are π_old (off-policy DPG's q)
    after_update: Callable[[Experience, Any], dict[str, float]] | None = None  # (batch, module) → metrics
    state: dict[str, Any] = field(default_factory=dict)  # carried across iterations and checkpointed
    models: Callable[[], dict[str, Any]] | None = None  # extra models to checkpoint, by name (q, past pool)
    keep: Callable[[Experience], torch.Tensor] | None = None  # (N,) bool rows to learn from (DAPO's filter)
    max_resamples: int = 0  # with ``keep``: extra sampling rounds that refill the batch with kept groups


def model_inputs(
    experience: Experience, model: Any
) -> tuple[tuple[torch.Tensor, ...], Callable[[torch.Tensor], torch.Tensor]]:
    """(input_ids, attention_mask, labels, position_ids) for a forward of ``model`` over ``experience``,
    and the function taking that forward's per-position outputs to the (N, A) response columns.

    When the model's attention takes 4-D masks, the rows become a shared-prefix layout: a group's prompt
    is computed once, and padding is left out (``Experience.shared_layout``). Rows hold up to 2·T tokens:
    attention costs the square of a row's length, and on the pipeline's GRPO batches (G = 4, T ≈ 73) a
    policy forward + backward took 98 / 75 / 84 ms at T / 2·T / 4·T, against 108 ms padded.
    Otherwise the padded (N, T) batch as sampled."""
    if not shares_prefixes(model):
        inputs = (
            experience.sequences,
            experience.attention_mask,
            experience.labels(),
            experience.position_ids(),
        )
        return inputs, experience.response_columns
    layout = experience.shared_layout(capacity=2 * experience.sequences.shape[1])

    def columns(per_position: torch.Tensor) -> torch.Tensor:
        return experience.response_columns(unshare(per_position, layout["index"]))

    inputs = (layout["input_ids"], layout["attention_mask"], layout["labels"], layout["position_ids"])
    return inputs, columns


def forward(
    module: PolicyValue, experience: Experience, temperature: float
) -> dict[str, torch.Tensor | None]:
    """log π, entropy and V at the response positions of ``experience``: (N, A) each."""
    inputs, columns = model_inputs(experience, getattr(module, "module", module).policy)
    out = module(*inputs, temperature)
    return {k: None if v is None else columns(v) for k, v in out.items()}


def reference_logprobs(reference: Any, experience: Experience, temperature: float) -> torch.Tensor:
    """log π_ref of the sampled tokens (N, A); with LoRA, the policy with its adapters disabled."""
    (input_ids, attention_mask, labels, position_ids), columns = model_inputs(experience, reference)
    args = (input_ids, attention_mask, labels, temperature, position_ids)
    with torch.inference_mode():  # no autograd bookkeeping at all
        if is_peft_model(reference):
            with reference.disable_adapter():
                logprobs = columns(token_logprobs(reference, *args))
        else:
            logprobs = columns(token_logprobs(reference, *args))
    return logprobs.clone()  # cloned outside inference mode: a normal tensor, which losses may save


def make_experience(
    module: PolicyValue,
    reference: Any,
    tokenizer: Any,
    scorer: Any,
    prompts: list,
    config: RLConfig,
    kl_coef: float,
    hooks: LoopHooks | None = None,
    backend: Any = None,
    make_env: Callable[[], Any] | None = None,
) -> Experience:
    """Steps 1–4 of the module docstring; ``hooks`` may change who samples (see ``LoopHooks``);
    ``make_env``: multi-turn episodes with an environment, whose rewards are the scores."""
    hooks = hooks or LoopHooks()
    opponent = hooks.opponent
    episode_rewards = None
    if make_env is not None:
        experience, episode_rewards = sample_episodes(
            module.policy,
            tokenizer,
            prompts,
            make_env,
            config.group_size,
            config.max_new_tokens,
            config.max_turns,
            config.temperature,
            config.top_p,
        )
    else:
        experience = sample(
            module.policy if hooks.proposal is None else hooks.proposal,
            tokenizer,
            prompts,
            config.group_size,
            config.max_new_tokens,
            config.temperature,
            config.top_p,
            logits_processors=(lambda mask: opponent(reference, mask)) if opponent else None,
            backend=backend,
        )
    experience.ref_logprobs = reference_logprobs(reference, experience, config.temperature)
    if hooks.proposal is not None:  # samples of q: π_old is q
        experience.old_logprobs = reference_logprobs(hooks.proposal, experience, config.temperature)
    elif single_on_policy_update(config, module, len(experience.prompts)):
        # π_old is π itself at the one update: its log-probs come from that update's forward (see run_online).
        experience.old_logprobs = None
    else:
        module.eval()
        with torch.no_grad():
            out = forward(module, experience, config.temperature)
        module.train()
        experience.old_logprobs, experience.values = out["logprobs"], out["values"]
    if episode_rewards is not None:
        experience.extras["judge_pairwise"] = torch.zeros_like(episode_rewards)
        return score_experience(experience, episode_rewards, config, kl_coef)
    if isinstance(scorer, CombinedReward):  # the reward library: lengths in tokens, each term logged
        values, components = scorer.score_components(
            experience.prompts, experience.completions, lengths=experience.response_mask.sum(-1).tolist()
        )
        for key, term in components.items():
            experience.extras[f"reward/{key}"] = torch.tensor(
                term, dtype=torch.float32, device=experience.response_mask.device
            )
    else:
        values = scorer.score(experience.prompts, experience.completions)
    # Every scorer's output is checked (a reward model or LLM judge can return NaN too), not only Python's.
    values = check_scores(config.reward, values, experience.prompts)
    raw = torch.tensor(values, dtype=torch.float32, device=experience.response_mask.device)
    # A pairwise judge's score of a row is its probability of beating its group (judges/llm.py).
    experience.extras["judge_pairwise"] = torch.full_like(raw, float(getattr(scorer, "pairwise", False)))
    return score_experience(experience, raw, config, kl_coef)


def score_experience(
    experience: Experience, raw_scores: torch.Tensor, config: RLConfig, kl_coef: float
) -> Experience:
    """Steps 3–4 on a sampled batch with its log-probs: the unfinished penalty, then the shaped per-token
    reward (the KL part only when ``kl_in_reward``) and each response's KL estimate."""
    experience.raw_scores = raw_scores
    experience.scores = penalise_unfinished(raw_scores, experience.finished, config.unfinished_penalty)
    logprobs = experience.ref_logprobs if experience.old_logprobs is None else experience.old_logprobs
    experience.rewards, kl = shaped_rewards(
        experience.scores,
        logprobs,
        experience.ref_logprobs,
        experience.response_mask,
        kl_coef if config.kl_in_reward else 0.0,
        config.kl_estimator,
    )
    experience.extras["kl"] = kl.sum(-1)  # (N,) KL estimate of each whole response (0 until known)
    return experience


def check_kl_settings(config: RLConfig) -> None:
    """Refuse a KL placement whose gradient is not ∇KL(π ‖ π_ref): in the reward the KL estimate reaches
    the gradient only as a score-function weight, E_π[k ∇log π], which is ∇KL only for k1 (k2 and k3 would
    optimise other divergences). As a loss term every estimator is exact (``kl_penalty_loss``)."""
    if config.kl_in_reward and config.kl_coef > 0 and config.kl_estimator != "k1":
        raise ConfigError(
            f"field 'kl_estimator': {config.kl_estimator} in the reward does not give the gradient of "
            "KL(π ‖ π_ref) (only k1 does there); use kl_estimator=k1, or kl_in_reward=false for a loss term"
        )


def refilled(
    first: Experience,
    experience_of: Callable[[int], Experience],
    hooks: LoopHooks,
    config: RLConfig,
    pad_token_id: int,
) -> tuple[Experience, dict[str, float]]:
    """DAPO's dynamic sampling (Yu et al. 2025, §3.2): keep the groups ``hooks.keep`` selects (those whose
    scores are not all equal, which alone carry a group-relative gradient), and sample the prompts after
    this iteration's, up to ``hooks.max_resamples`` more rounds, until the batch holds ``batch_size``
    groups (surplus groups are dropped). With no group kept at all, the first batch is used as it is."""
    group, wanted = config.group_size, config.batch_size
    kept, n_kept, rounds = [], 0, 0
    batch = first
    while True:
        rows = hooks.keep(batch).nonzero().squeeze(1)
        if len(rows):
            kept.append(batch.select(rows))
            n_kept += len(rows) // group
        if n_kept >= wanted or rounds >= hooks.max_resamples:
            break
        rounds += 1
        batch = experience_of(rounds)
    metrics = {
        "dynamic/kept_groups": float(min(n_kept, wanted)),
        "dynamic/resample_rounds": float(rounds),
    }
    if not kept:
        return first, metrics
    experience = concat(kept, pad_token_id)
    if n_kept > wanted:
        experience = experience.select(torch.arange(wanted * group))
    return experience, metrics


def shuffled_minibatches(n: int, group_size: int, minibatch_size: int) -> list[torch.Tensor]:
    """Row indices of each minibatch: whole groups (the G samples of a prompt) in random order, so a
    minibatch never splits a group; at least one group per minibatch. One minibatch holding every row
    keeps them in order (the loss does not depend on their order)."""
    if minibatch_size >= n:
        return [torch.arange(n)]
    groups = torch.randperm(n // group_size)
    rows = (groups[:, None] * group_size + torch.arange(group_size)).flatten()
    per_minibatch = max(1, minibatch_size // group_size) * group_size
    return list(rows.split(per_minibatch))


def single_on_policy_update(config: RLConfig, module: PolicyValue, n: int) -> bool:
    """One gradient step on the whole batch, with no value head and no KL in the reward: then
    π_old = π at that step, and a separate no-grad forward for log π_old would be wasted."""
    return (
        config.ppo_epochs == 1
        and config.minibatch_size >= n
        and module.value_head is None
        and not config.kl_in_reward
    )


def run_online(
    config: RLConfig,
    value_mode: str,
    advantage_fn: AdvantageFn,
    loss_fn: LossFn,
    hooks: LoopHooks | None = None,
) -> dict[str, float]:
    """The shared loop; returns the last iteration's metrics.

    ``hooks.state``: what an algorithm carries across iterations (REINFORCE's moving baseline); it is
    saved in checkpoints (every ``save_every`` steps: policy, value head, optimiser, RNG states, β) and
    restored, in place, by ``resume``. A resumed run continues exactly as the uninterrupted one would."""
    hooks = hooks or LoopHooks()
    state, opponent = hooks.state, hooks.opponent
    check_kl_settings(config)
    policy, tokenizer = load_policy(config)
    # The frozen reference: with LoRA, the policy itself with adapters off; else a copy of the start.
    reference = policy if is_peft_model(policy) else copy.deepcopy(policy).requires_grad_(False).eval()
    make_env = resolve_env(config.env, config.seed, config.max_turns) if config.env else None
    if make_env is not None and (
        opponent is not None or hooks.proposal is not None or config.rollout_backend != "hf"
    ):
        raise ConfigError(
            "field 'env': multi-turn episodes sample the policy with the built-in sampler (not Nash-MD's "
            "opponents, DPG's frozen proposal or vLLM)"
        )
    # With an environment, its rewards are the scores: no reward model or judge is loaded.
    scorer = (
        None if make_env is not None else resolve_judge(config.reward, config.seed, config.trust_remote_code)
    )
    gold = resolve_judge(config.gold, config.seed) if config.gold else None
    # The loop reads prompts in order and cycles: the first max_steps · batch_size are all it can use.
    prompts = load_prompts(
        config.prompts, min(config.n_prompts, config.max_steps * config.batch_size), config.seed
    )

    torch.manual_seed(config.seed)
    module = PolicyValue(policy, value_mode)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    optimizer = build_optimizer(
        module.named_parameters(),
        config.learning_rate,
        config.weight_decay,
        (config.adam_beta1, config.adam_beta2),
    )
    module, optimizer = accelerator.prepare(module, optimizer)
    logger = MetricLogger(
        config.output_dir, accelerator.is_main_process, config.tensorboard, fresh=not config.resume
    )
    kl_control = AdaptiveKLController(config.kl_coef, config.target_kl or None, config.kl_horizon)
    guard = NanGuard(config.nan_policy, config.max_nan_skips)
    first_step, samples_seen = 0, 0
    if config.resume and (found := list_checkpoints(config.output_dir)):
        saved = load_checkpoint(accelerator, found[-1])  # the reference above stays the initial policy
        first_step, samples_seen, kl_control.value = saved["step"], saved["samples_seen"], saved["kl_coef"]
        state.update(saved["algorithm"])
        load_extra_models(hooks, found[-1])
        tqdm.write(f"resume: continuing from {found[-1]} (step {first_step} of {config.max_steps})")
    warmup = round(config.warmup_ratio * config.max_steps)
    backend = None
    if config.rollout_backend == "vllm":
        from tether.rollout.vllm_backend import VLLMBackend

        if opponent is not None or hooks.proposal is not None:
            raise ConfigError(
                "rollout_backend=vllm samples the policy only (not Nash-MD's opponents or DPG's frozen "
                "proposal); use 'hf'"
            )
        backend = VLLMBackend(config.model, config.vllm_gpu_memory_utilization, config.seed)
        if first_step or is_peft_model(policy):  # the engine loaded config.model: give it the current weights
            backend.load_weights(policy)
    bar = tqdm(
        total=config.max_steps,
        initial=first_step,
        desc=f"rl {config.output_dir}",
        disable=not config.progress,
        dynamic_ncols=True,
    )
    row: dict[str, float] = {}
    started, seen_at_start = time.perf_counter(), samples_seen

    for step in range(first_step, config.max_steps):

        def experience_of(round_: int, step: int = step) -> Experience:
            """Steps 1–4 on this iteration's prompts (round 0) or the ones after them (refill rounds)."""
            start = (step * config.batch_size + round_ * config.batch_size) % len(prompts)
            batch_prompts = [prompts[(start + i) % len(prompts)] for i in range(config.batch_size)]
            return make_experience(
                accelerator.unwrap_model(module),
                reference,
                tokenizer,
                scorer,
                batch_prompts,
                config,
                kl_control.value,
                hooks,
                backend,
                make_env,
            )

        experience = experience_of(0)
        refill_metrics: dict[str, float] = {}
        if hooks.keep is not None:
            experience, refill_metrics = refilled(
                experience, experience_of, hooks, config, tokenizer.pad_token_id
            )
        advantage_fn(experience, config)  # fills experience.advantages (and .returns)

        lr = config.learning_rate * lr_multiplier(
            step, config.max_steps, warmup, config.lr_scheduler, config.min_lr_ratio
        )
        set_learning_rate(optimizer, lr)
        sums: dict[str, float] = {}
        updates = 0
        n = experience.sequences.shape[0]
        for _ in range(config.ppo_epochs):
            for rows in shuffled_minibatches(n, config.group_size, config.minibatch_size):
                minibatch = experience.select(rows)
                out = forward(module, minibatch, config.temperature)
                if minibatch.old_logprobs is None:  # the single on-policy update: π_old = π, ratio 1
                    minibatch.old_logprobs = out["logprobs"].detach()
                    kl = kl_estimate(minibatch.old_logprobs, minibatch.ref_logprobs, config.kl_estimator)
                    experience.extras["kl"] = (kl * minibatch.response_mask).sum(-1)
                loss, metrics = loss_fn(out, minibatch, config, kl_control.value)
                # Every algorithm logs the same keys (docs/architecture.md): fill those a loss does not
                # report itself.
                metrics.setdefault(
                    "policy/entropy", masked_mean(out["entropy"].detach(), minibatch.response_mask)
                )
                metrics.setdefault("policy/clipfrac", torch.zeros(()))
                accelerator.backward(loss)
                max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
                metrics["grad_norm"] = accelerator.clip_grad_norm_(module.parameters(), max_norm)
                if guard.allows(step + 1, loss=loss, grad_norm=metrics["grad_norm"]):
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                updates += 1
                for key, value in {"loss": loss, **metrics}.items():
                    sums[key] = sums.get(key, 0.0) + float(torch.as_tensor(value).detach())

        if hooks.after_update is not None:
            row_extra = hooks.after_update(experience, accelerator.unwrap_model(module))
        else:
            row_extra = {}
        if backend is not None:  # the next batch is sampled from the updated policy
            backend.load_weights(accelerator.unwrap_model(module).policy)
        kl = float(experience.extras["kl"].mean())
        kl_control.update(kl, n)
        samples_seen += n
        row = {k: v / updates for k, v in sums.items()}
        row.update(
            {
                "reward/score": float(experience.scores.mean()),
                "kl/ref": kl,
                "kl_coef": kl_control.value,
                "response/length": float(experience.response_mask.sum(-1).float().mean()),
                "response/finished": float(experience.finished.float().mean()),
                "lr": lr,
                "samples_per_s": (samples_seen - seen_at_start) / (time.perf_counter() - started),
                **row_extra,
                **refill_metrics,
                **{k: float(v.mean()) for k, v in experience.extras.items() if k.startswith("reward/")},
                **({"episode/turns": float(experience.extras["turns"].mean())} if make_env else {}),
            }
        )
        if guard.skipped:
            row["nan_skips"] = guard.skipped
        if gold is not None:
            row["reward/gold"] = sum(gold.score(experience.prompts, experience.completions)) / n
        logger.log(step + 1, row)
        if config.save_every and (step + 1) % config.save_every == 0:
            check_finite_weights(module.named_parameters(), f"checkpoint step-{step + 1}")
            progress = {"samples_seen": samples_seen, "kl_coef": kl_control.value, "algorithm": state}
            save_checkpoint(
                accelerator,
                config.output_dir,
                step + 1,
                progress,
                config.keep_checkpoints,
                extra=lambda folder: save_extra_models(hooks, folder),
            )
        bar.update(1)
        bar.set_postfix(
            score=f"{row['reward/score']:.2f}", kl=f"{kl:.2f}", gold=f"{row.get('reward/gold', 0):.2f}"
        )
    bar.close()
    logger.close()
    finish_policy(accelerator, accelerator.unwrap_model(module).policy, tokenizer, config, wrapped=module)
    return row


def save_extra_models(hooks: LoopHooks, folder: Path) -> None:
    """The loop's other models (off-policy DPG's q, Nash-MD's past policies) as ``extra_models/NAME.safetensors``."""
    if hooks.models is None:
        return
    from safetensors.torch import save_file

    target = folder / "extra_models"
    target.mkdir()
    for name, model in hooks.models().items():
        save_file(
            {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()},
            target / f"{name}.safetensors",
        )


def load_extra_models(hooks: LoopHooks, folder: Path) -> None:
    """Restore what ``save_extra_models`` wrote into the models ``hooks.models()`` names now (same names)."""
    if hooks.models is None:
        return
    from safetensors.torch import load_file

    for name, model in hooks.models().items():
        model.load_state_dict(load_file(folder / "extra_models" / f"{name}.safetensors"))


def kl_loss_term(
    out: dict, minibatch: Experience, config: RLConfig, kl_coef: float
) -> tuple[torch.Tensor, dict]:
    """β·KL(π_θ ‖ π_ref) as a loss term (when it is not in the reward), whose expected gradient is
    β·∇KL(π_θ ‖ π_ref) for each estimator (``kl_penalty_loss``), aggregated as the policy loss; else 0."""
    if config.kl_in_reward or kl_coef == 0:
        return torch.zeros(()), {}
    term, metrics = kl_penalty_loss(
        out["logprobs"], minibatch.ref_logprobs, minibatch.response_mask, config.kl_estimator, config.loss_agg
    )
    return kl_coef * term, metrics


def clipped_policy_loss(
    out: dict, minibatch: Experience, config: RLConfig, kl_coef: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The actor's loss every policy-gradient algorithm shares: PPO's clipped surrogate −min(ρÂ, clip(ρ)Â)
    (plain REINFORCE when ρ = 1, on-policy), − ent_coef·entropy, + β·KL when KL is a loss term."""
    policy_loss, metrics = ppo_clip_loss(
        out["logprobs"],
        minibatch.old_logprobs,
        minibatch.advantages,
        minibatch.response_mask,
        config.clip_eps,
        loss_agg=config.loss_agg,
    )
    return regularised(policy_loss, metrics, out, minibatch, config, kl_coef)


def regularised(
    policy_loss: torch.Tensor,
    metrics: dict[str, torch.Tensor],
    out: dict,
    minibatch: Experience,
    config: RLConfig,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A policy loss − ent_coef·entropy (per-state entropy bonus) + β·KL when KL is a loss term."""
    entropy_loss, entropy_metrics = entropy_bonus(out["entropy"], minibatch.response_mask, config.loss_agg)
    kl_term, kl_metrics = kl_loss_term(out, minibatch, config, kl_coef)
    metrics.update(entropy_metrics)
    metrics.update(kl_metrics)
    metrics["policy/loss"] = policy_loss.detach()
    if config.ent_coef:  # (0 · entropy would still send a backward pass through the entropy)
        policy_loss = policy_loss + config.ent_coef * entropy_loss
    return policy_loss + kl_term, metrics
