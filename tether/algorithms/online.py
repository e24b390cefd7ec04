"""The loop every online algorithm shares, in the lecture's order:

1. **sample**: take B prompts, G responses each (``rollout.sample``) → N = B·G rows;
2. **score** each response (reward model, gym judge, Python function, or an environment's rewards); a
   response that never stopped loses ``unfinished_penalty`` from its score;
3. **reference log-probs**: log π_ref from the frozen reference (with LoRA: the same model, adapters off),
   log π_old and V(s_t) when the update needs them; the shaped reward r_t = −β·KL_t (+ score at the last
   token), or the KL kept for a loss term (``losses/policy.py: kl_penalty_loss``);
4. **advantages** and returns — the part each algorithm defines (``advantage_fn``);
5. **K epochs of minibatches**: the algorithm's loss (``loss_fn``) and backward; an optimiser step every
   ``grad_accum_steps`` minibatches (clipped; none on a non-finite loss or gradient: ``engine/guard.py``);
6. **after the update**: the algorithm's hook, β adapted, one metrics row with the same keys for every
   algorithm, a checkpoint every ``save_every`` iterations.

The accelerator (``mixed_precision``), optimiser, schedule, NaN guard, metric log, checkpoints and resume
are the engine's ``Session`` (``engine/session.py``), built as the offline ``Trainer`` builds them. The
stages (ppo.py, policy_gradient.py, online_dpo.py, nash_md.py, distribution_matching.py) supply steps 4
and 5's loss.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import set_seed

from tether.algorithms.actor_loss import loss_items
from tether.algorithms.common import finish_policy, load_policy
from tether.algorithms.online_batch import (
    LoopHooks,
    forward,
    make_experience,
    refilled,
    rows_per_minibatch,
)
from tether.config import ConfigError, RLConfig, is_unused
from tether.engine.flops import TRAINING, ModelCost, Throughput
from tether.engine.session import Session, build_accelerator
from tether.envs import resolve_env
from tether.models.lora import is_peft_model
from tether.models.value import PolicyValue
from tether.ops.kl import kl_estimate
from tether.ops.masked import masked_mean
from tether.rollout.experience import Experience
from tether.rollout.rewards import AdaptiveKLController
from tether.specs import load_prompts, resolve_judge

AdvantageFn = Callable[[Experience, RLConfig], None]
LossFn = Callable[[dict, Experience, RLConfig, float], tuple[torch.Tensor, dict[str, torch.Tensor]]]
CountFn = Callable[[Experience, RLConfig], float]


def run_online(
    config: RLConfig,
    value_mode: str,
    advantage_fn: AdvantageFn,
    loss_fn: LossFn,
    hooks: LoopHooks | None = None,
    count_fn: CountFn | None = None,
) -> dict[str, float]:
    """The shared loop (module docstring); returns the last iteration's metrics.

    ``count_fn(minibatch, config)``: how many items ``loss_fn`` averages over (default ``loss_items``),
    which weighs minibatches accumulated into one step. ``hooks.state``: what an algorithm carries across
    iterations (REINFORCE's moving baseline); it is checkpointed with the session (every ``save_every``
    steps: policy, value head, optimiser, RNG states, β, ``hooks.models()``) and restored, in place, by
    ``resume``. A resumed run continues exactly as the uninterrupted one would."""
    hooks, count_fn = hooks or LoopHooks(), count_fn or loss_items
    check_online_settings(config, hooks)
    run = start_online(config, value_mode, hooks)
    session = run.session
    bar = session.progress_bar(f"rl {config.output_dir}", initial=run.first_step)
    row: dict[str, float] = {}
    with session.running():
        for step in range(run.first_step, config.max_steps):
            experience, refill_metrics = collect(run, step)  # 1–3: sample, score, reference log-probs
            advantage_fn(experience, config)  # 4: fills experience.advantages (and .returns)
            lr = session.set_learning_rate(step)
            flops = iteration_flops(run, experience)  # before the update fills in a missing log π_old
            row = update(session, experience, config, loss_fn, count_fn, run.kl_control.value, step)  # 5
            row.update(after_update(run, experience), **refill_metrics, lr=lr)  # 6: hooks, vLLM, β
            run.throughput.add(float(experience.response_mask.sum()), flops)
            row.update(batch_metrics(run, experience), **run.throughput.row())
            session.log(step + 1, row)  # every log_every iterations and the last
            session.checkpoint(step + 1, run.carried(), hooks.models)  # every save_every iterations
            bar.update(1)
            bar.set_postfix(
                score=f"{row['reward/score']:.2f}",
                kl=f"{row['kl/ref']:.2f}",
                gold=f"{row.get('reward/gold', 0):.2f}",
                mfu=f"{row['mfu']:.0%}",
            )
    bar.close()
    session.close()
    finish_policy(
        session.accelerator, session.unwrapped().policy, run.tokenizer, config, wrapped=session.module
    )
    return row


def check_online_settings(config: RLConfig, hooks: LoopHooks) -> None:
    """Refuse, before anything is loaded, what the loop would otherwise ignore or get wrong: a KL placement
    without the right gradient, fields the config marks unused (``config/online.py``), and samplers
    that cannot serve an environment, an opponent or a proposal."""
    check_kl_settings(config)
    for f in dataclasses.fields(config):  # refused by the loader; here for configs built in code
        if is_unused(f) and getattr(config, f.name) != f.default:
            raise ConfigError(
                f"field '{f.name}': not used: {f.metadata['unused']}; leave it at {f.default!r}"
            )
    special = hooks.opponent is not None or hooks.proposal is not None
    if config.env and (special or config.rollout_backend != "hf"):
        raise ConfigError(
            "field 'env': multi-turn episodes sample the policy with the built-in sampler (not Nash-MD's "
            "opponents, DPG's frozen proposal or vLLM)"
        )
    if config.rollout_backend == "vllm" and special:
        raise ConfigError(
            "rollout_backend=vllm samples the policy only (not Nash-MD's opponents or DPG's frozen "
            "proposal); use 'hf'"
        )


def check_kl_settings(config: RLConfig) -> None:
    """Refuse a KL placement whose gradient is not ∇KL(π ‖ π_ref): in the reward the KL estimate reaches
    the gradient only as a score-function weight, E_π[k ∇log π], which is ∇KL only for k1 (k2 and k3 would
    optimise other divergences). As a loss term every estimator is exact (``kl_penalty_loss``)."""
    if config.kl_in_reward and config.kl_coef > 0 and config.kl_estimator != "k1":
        raise ConfigError(
            f"field 'kl_estimator': {config.kl_estimator} in the reward does not give the gradient of "
            "KL(π ‖ π_ref) (only k1 does there); use kl_estimator=k1, or kl_in_reward=false for a loss term"
        )


@dataclass
class OnlineRun:
    """What the loop holds besides the engine's ``Session``: the models it samples and scores with, the
    prompts, and the state carried from one iteration to the next (checkpointed: ``carried``)."""

    config: RLConfig
    session: Session
    hooks: LoopHooks
    reference: Any
    tokenizer: Any
    scorer: Any
    gold: Any
    prompts: list
    make_env: Callable[[], Any] | None
    kl_control: AdaptiveKLController
    backend: Any = None
    throughput: Any = None  # engine.flops.Throughput: response tokens/s and MFU since the (re)start
    costs: tuple = ()  # ModelCost of the policy and of the whole trained module (policy, critic, head)
    first_step: int = 0
    samples_seen: int = 0
    started: float = 0.0  # when this process's first iteration began, and samples_seen then
    seen_at_start: int = 0

    def carried(self) -> dict[str, Any]:
        """The loop's state beside the session's (checkpointed with the step): samples, β, the hooks'."""
        return {
            "samples_seen": self.samples_seen,
            "kl_coef": self.kl_control.value,
            "algorithm": self.hooks.state,
        }


def start_online(config: RLConfig, value_mode: str, hooks: LoopHooks) -> OnlineRun:
    """Load the policy, reference, scorer and prompts; build the session around the policy (and value
    function, ``value_mode``); resume the latest checkpoint with ``resume=true``."""
    accelerator = build_accelerator(config.mixed_precision)  # first: a refused precision loads nothing
    policy, tokenizer = load_policy(config)
    # The frozen reference: with LoRA, the policy itself with adapters off; else a copy of the start.
    reference = policy if is_peft_model(policy) else copy.deepcopy(policy).requires_grad_(False).eval()
    make_env = resolve_env(config.env, config.seed, config.max_turns) if config.env else None
    # With an environment, its rewards are the scores: no reward model or judge is loaded.
    scorer = None if make_env else resolve_judge(config.reward, config.seed, config.trust_remote_code)
    gold = resolve_judge(config.gold, config.seed) if config.gold else None
    # The loop reads prompts in order and cycles: the first max_steps · batch_size are all it can use.
    prompts = load_prompts(
        config.prompts, min(config.n_prompts, config.max_steps * config.batch_size), config.seed
    )
    set_seed(config.seed)
    session = Session(config, PolicyValue(policy, value_mode), config.max_steps, accelerator)
    session.place(reference, hooks.proposal, *(hooks.models().values() if hooks.models else ()))
    kl_control = AdaptiveKLController(config.kl_coef, config.target_kl or None, config.kl_horizon)
    run = OnlineRun(config, session, hooks, reference, tokenizer, scorer, gold, prompts, make_env, kl_control)
    if saved := session.resume():  # the reference above stays the initial policy
        run.first_step, run.samples_seen, kl_control.value = (
            saved["step"],
            saved["samples_seen"],
            saved["kl_coef"],
        )
        hooks.state.update(saved["algorithm"])
        if hooks.models is not None:  # after the state: it may say how many models to rebuild
            session.load_models(hooks.models())
    if config.rollout_backend == "vllm":
        from tether.rollout.vllm_backend import VLLMBackend

        run.backend = VLLMBackend(config.model, config.vllm_gpu_memory_utilization, config.seed)
        if run.first_step or is_peft_model(policy):  # the engine loaded config.model: give it these weights
            run.backend.load_weights(policy)
    run.started, run.seen_at_start = time.perf_counter(), run.samples_seen
    run.throughput = Throughput(accelerator.device, accelerator.num_processes)
    run.costs = (ModelCost.of(policy), ModelCost.of(session.unwrapped()))
    return run


def collect(run: OnlineRun, step: int) -> tuple[Experience, dict[str, float]]:
    """Steps 1–3 on iteration ``step``'s prompts; with ``hooks.keep``, refilled from the prompts after them."""

    def experience_of(round_: int) -> Experience:
        config, prompts = run.config, run.prompts
        start = (step + round_) * config.batch_size % len(prompts)
        batch_prompts = [prompts[(start + i) % len(prompts)] for i in range(config.batch_size)]
        return make_experience(
            run.session.unwrapped(),
            run.reference,
            run.tokenizer,
            run.scorer,
            batch_prompts,
            config,
            run.kl_control.value,
            run.hooks,
            run.backend,
            run.make_env,
            autocast=run.session.autocast,
        )

    experience = experience_of(0)
    if run.hooks.keep is None:
        return experience, {}
    return refilled(experience, experience_of, run.hooks, run.config, run.tokenizer.pad_token_id)


def update(
    session: Session,
    experience: Experience,
    config: RLConfig,
    loss_fn: LossFn,
    count_fn: CountFn,
    kl_coef: float,
    step: int,
) -> dict[str, float]:
    """Step 5: ``ppo_epochs`` passes over the batch in shuffled minibatches of whole groups, an optimiser
    step every ``grad_accum_steps`` of them. Each minibatch's loss, a mean over its loss items, is weighed
    by its share of the step's items (``count_fn``), so N minibatches of m rows give the gradient of one
    minibatch of N·m rows. Returns each metric's mean over minibatches (``grad_norm``'s over steps)."""
    n, accumulate = experience.sequences.shape[0], config.grad_accum_steps
    sums: dict[str, float] = {}
    norms, minibatches = [], 0
    for _ in range(config.ppo_epochs):
        order = shuffled_minibatches(
            n, config.group_size, config.minibatch_size, by_rows=config.minibatch_order == "rows"
        )
        for first in range(0, len(order), accumulate):
            chunk = [(rows, experience.select(rows)) for rows in order[first : first + accumulate]]
            weights = item_shares([count_fn(minibatch, config) for _, minibatch in chunk])
            step_loss = 0.0
            for i, ((rows, minibatch), weight) in enumerate(zip(chunk, weights)):
                with session.accumulating(last=i == len(chunk) - 1):
                    loss, metrics = minibatch_loss(
                        session, experience, rows, minibatch, config, loss_fn, kl_coef
                    )
                    session.accelerator.backward(loss * weight)
                step_loss += weight * float(loss.detach())
                minibatches += 1
                for key, value in {"loss": loss, **metrics}.items():
                    sums[key] = sums.get(key, 0.0) + float(torch.as_tensor(value).detach())
            norms.append(session.optimizer_step(step + 1, step_loss))
    return {**{k: v / minibatches for k, v in sums.items()}, "grad_norm": sum(norms) / len(norms)}


def shuffled_minibatches(
    n: int, group_size: int, minibatch_size: int, by_rows: bool = False
) -> list[torch.Tensor]:
    """Row indices of each minibatch of ``minibatch_size`` rows rounded down to whole groups (at least
    one group): whole groups (the G samples of a prompt) in random order, so a minibatch never splits a
    group, or with ``by_rows`` every row shuffled across prompts (TRL's order). One minibatch holding every
    row keeps them in order (the loss does not depend on their order)."""
    if minibatch_size >= n:
        return [torch.arange(n)]
    size = rows_per_minibatch(group_size, minibatch_size)
    if by_rows:
        return list(torch.randperm(n).split(size))
    groups = torch.randperm(n // group_size)
    rows = (groups[:, None] * group_size + torch.arange(group_size)).flatten()
    return list(rows.split(size))


def item_shares(counts: list[float]) -> list[float]:
    """Each minibatch's share of an optimiser step's loss items; equal shares when none holds any."""
    total = sum(counts)
    return [c / total for c in counts] if total > 0 else [1.0 / len(counts)] * len(counts)


def minibatch_loss(
    session: Session,
    experience: Experience,
    rows: torch.Tensor,
    minibatch: Experience,
    config: RLConfig,
    loss_fn: LossFn,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A minibatch's forward (log π, entropy, V) and loss, under the run's autocast; the keys every
    algorithm logs are filled in where the loss does not report them (docs/architecture.md)."""
    with session.autocast():
        out = forward(session.module, minibatch, config.temperature)
        if minibatch.old_logprobs is None:  # the single on-policy update: π_old = π, ratio 1
            minibatch.old_logprobs = out["logprobs"].detach()
            kl = kl_estimate(minibatch.old_logprobs, minibatch.ref_logprobs, config.kl_estimator)
            experience.extras["kl"][rows] = (kl * minibatch.response_mask).sum(-1)
        loss, metrics = loss_fn(out, minibatch, config, kl_coef)
    metrics.setdefault("policy/entropy", masked_mean(out["entropy"].detach(), minibatch.response_mask))
    metrics.setdefault("policy/clipfrac", torch.zeros(()))
    return loss, metrics


def after_update(run: OnlineRun, experience: Experience) -> dict[str, float]:
    """Step 6 before logging: the algorithm's hook, the new weights to vLLM, β adapted to the batch's KL."""
    module = run.session.unwrapped()
    metrics = run.hooks.after_update(experience, module) if run.hooks.after_update is not None else {}
    if run.backend is not None:  # the next batch is sampled from the updated policy
        run.backend.load_weights(module.policy)
    n = experience.sequences.shape[0]
    run.kl_control.update(float(experience.extras["kl"].mean()), n)
    run.samples_seen += n
    return metrics


def iteration_flops(run: OnlineRun, experience: Experience) -> float:
    """The model FLOPs of an iteration on ``experience`` (``engine/flops.py``), every position of its
    (N, T) rows: the policy's sampling (one forward's worth, with its KV cache) and the reference's
    forward; the trained module's (policy, and a critic if any) no-grad forward for log π_old and V when
    the loop made one; its forward and backward in each of ``ppo_epochs`` passes. Not counted: the
    reward model's or judge's scoring, and batches sampled and then dropped by dynamic sampling."""
    policy, module = run.costs
    rows, length = experience.sequences.shape
    separate_old = experience.old_logprobs is not None  # else the first minibatch's forward gives it
    module_passes = float(separate_old) + TRAINING * run.config.ppo_epochs
    return 2 * policy.forward_flops(rows, length) + module_passes * module.forward_flops(rows, length)


def batch_metrics(run: OnlineRun, experience: Experience) -> dict[str, float]:
    """The batch's part of the metrics row every online stage logs (docs/architecture.md)."""
    n = experience.sequences.shape[0]
    row = {
        "reward/score": float(experience.scores.mean()),
        "kl/ref": float(experience.extras["kl"].mean()),
        "kl_coef": run.kl_control.value,
        "response/length": float(experience.response_mask.sum(-1).float().mean()),
        "response/finished": float(experience.finished.float().mean()),
        "samples_per_s": (run.samples_seen - run.seen_at_start) / (time.perf_counter() - run.started),
        **{k: float(v.mean()) for k, v in experience.extras.items() if k.startswith("reward/")},
    }
    if run.make_env is not None:
        row["episode/turns"] = float(experience.extras["turns"].mean())
    if run.session.guard.skipped:
        row["nan_skips"] = run.session.guard.skipped
    if run.gold is not None:
        row["reward/gold"] = sum(run.gold.score(experience.prompts, experience.completions)) / n
    return row
