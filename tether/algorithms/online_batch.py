"""Steps 1–3 of the online loop (``online.py``): the batch an iteration learns from.

``make_experience`` samples G responses per prompt (or G episodes with an environment), scores them,
computes log π_ref — and log π_old and V(s_t) when the update needs them — and the shaped reward. With
DAPO's dynamic sampling, ``refilled`` replaces groups that carry no gradient with groups sampled from the
next prompts. ``forward`` is the policy/value forward every update uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from tether.config import RLConfig
from tether.data.packing import unshare
from tether.models.forward import shares_prefixes, token_logprobs
from tether.models.lora import is_peft_model
from tether.models.value import PolicyValue
from tether.rewards import CombinedReward
from tether.rewards.validation import check_scores
from tether.rollout.experience import Experience, concat, sample
from tether.rollout.multiturn import sample_episodes
from tether.rollout.rewards import penalise_unfinished, shaped_rewards

OpponentFn = Callable[[Any, torch.Tensor], list]
Autocast = Callable[[], AbstractContextManager]


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
    """log π, entropy and V at the response positions of ``experience``: (N, A) each, in fp32 (the value
    head's output is bf16 under bf16 autocast)."""
    inputs, columns = model_inputs(experience, getattr(module, "module", module).policy)
    out = module(*inputs, temperature)
    return {k: None if v is None else columns(v).float() for k, v in out.items()}


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
    autocast: Autocast = nullcontext,
) -> Experience:
    """Steps 1–3 of ``online.py``'s docstring: sample, score, reference (and π_old) log-probs, shaped
    reward. ``hooks`` may change who samples (see ``LoopHooks``);
    ``make_env``: multi-turn episodes with an environment, whose rewards are the scores. ``autocast``: the
    context of the log-prob forwards (the run's mixed precision); sampling runs in the weights' dtype."""
    hooks = hooks or LoopHooks()
    experience, raw_scores = sample_batch(
        module, reference, tokenizer, prompts, config, hooks, backend, make_env
    )
    if raw_scores is None:
        raw_scores = judge_batch(scorer, experience, config)
    with autocast():
        add_logprobs(module, reference, experience, config, hooks)
    return score_experience(experience, raw_scores, config, kl_coef)


def sample_batch(
    module: PolicyValue,
    reference: Any,
    tokenizer: Any,
    prompts: list,
    config: RLConfig,
    hooks: LoopHooks,
    backend: Any,
    make_env: Callable[[], Any] | None,
) -> tuple[Experience, torch.Tensor | None]:
    """Step 1: G responses per prompt (from the policy, ``hooks.proposal``, or against ``hooks.opponent``),
    or G episodes with an environment, whose summed rewards come back as the scores (else None)."""
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
        experience.extras["judge_pairwise"] = torch.zeros_like(episode_rewards)
        return experience, episode_rewards
    opponent = hooks.opponent
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
    return experience, None


def judge_batch(scorer: Any, experience: Experience, config: RLConfig) -> torch.Tensor:
    """Step 2: the scorer's score of each response (N,), checked (one finite number per completion); the
    reward library's terms are kept in ``extras`` to be logged one by one."""
    device = experience.response_mask.device
    if isinstance(scorer, CombinedReward):  # the reward library: lengths in tokens, each term logged
        values, components = scorer.score_components(
            experience.prompts, experience.completions, lengths=experience.response_mask.sum(-1).tolist()
        )
        for key, term in components.items():
            experience.extras[f"reward/{key}"] = torch.tensor(term, dtype=torch.float32, device=device)
    else:
        values = scorer.score(experience.prompts, experience.completions)
    # Every scorer's output is checked (a reward model or LLM judge can return NaN too), not only Python's.
    values = check_scores(config.reward, values, experience.prompts)
    raw = torch.tensor(values, dtype=torch.float32, device=device)
    # A pairwise judge's score of a row is its probability of beating its group (judges/llm.py).
    experience.extras["judge_pairwise"] = torch.full_like(raw, float(getattr(scorer, "pairwise", False)))
    return raw


def add_logprobs(
    module: PolicyValue, reference: Any, experience: Experience, config: RLConfig, hooks: LoopHooks
) -> None:
    """Step 3's forwards: log π_ref; log π_old (the proposal's when it sampled) and V(s_t) — unless the
    batch gets one optimiser step, whose own forward then gives π_old (``single_on_policy_update``)."""
    experience.ref_logprobs = reference_logprobs(reference, experience, config.temperature)
    if hooks.proposal is not None:  # samples of q: π_old is q
        experience.old_logprobs = reference_logprobs(hooks.proposal, experience, config.temperature)
    elif single_on_policy_update(config, module, len(experience.prompts)):
        experience.old_logprobs = None  # π_old is π at the one step: taken from that step's forward
    else:
        module.eval()
        with torch.no_grad():
            out = forward(module, experience, config.temperature)
        module.train()
        experience.old_logprobs, experience.values = out["logprobs"], out["values"]


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


def rows_per_minibatch(group_size: int, minibatch_size: int) -> int:
    """``minibatch_size`` rounded down to whole groups, at least one group."""
    return max(1, minibatch_size // group_size) * group_size


def single_on_policy_update(config: RLConfig, module: PolicyValue, n: int) -> bool:
    """One optimiser step on the whole batch — one epoch, whose minibatches all fall into one gradient
    accumulation — with no value head and no KL in the reward: then π_old = π at that step (the weights
    move only after it), and a separate no-grad forward for log π_old would be wasted."""
    minibatches = (
        1
        if config.minibatch_size >= n
        else math.ceil(n / rows_per_minibatch(config.group_size, config.minibatch_size))
    )
    return (
        config.ppo_epochs == 1
        and minibatches <= config.grad_accum_steps
        and module.value_head is None
        and not config.kl_in_reward
    )
