"""Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback"): the DPO
family's losses on fresh pairs from the current policy; and iterative DPO, the same in rounds
(``run_iterative_dpo``, at the end of this file).

Each step: sample two responses per prompt from π_θ → the judge scores both, the higher is chosen (ties
carry no weight) → log π_ref of both from the frozen reference → one gradient step on a loss of
``losses/preference.py``. Unlike offline DPO, the pairs follow the policy as it moves. The sampling,
reference and logging loop is the one every online algorithm shares (``online.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tether.algorithms.dpo import loss_settings, parse_loss_spec, uses_reference
from tether.algorithms.online import run_online
from tether.config import IterativeDPOConfig, OnlineDPOConfig
from tether.eval.policy import mean_score, sampled_score
from tether.losses.preference import combined_preference_loss
from tether.rollout.experience import Experience
from tether.specs import load_prompts, resolve_judge


def label_pairs(experience: Experience, config: OnlineDPOConfig) -> None:
    """Rows 2i and 2i + 1 are a pair (G = 2); the judge's higher score wins. No advantages needed."""
    scores = experience.scores.view(-1, 2)
    experience.extras["first_wins"] = (scores[:, 0] > scores[:, 1]).repeat_interleave(2)
    experience.extras["decided"] = (scores[:, 0] != scores[:, 1]).repeat_interleave(2)


def make_online_dpo_loss(config: OnlineDPOConfig) -> Callable[..., tuple[torch.Tensor, dict]]:
    """The loss callable of ``run_online`` for the configured preference loss(es)."""
    terms = parse_loss_spec(config.loss)
    with_reference = uses_reference(terms)

    def loss_fn(
        out: dict, minibatch: Experience, cfg: OnlineDPOConfig, kl_coef: float
    ) -> tuple[torch.Tensor, dict]:
        mask = minibatch.response_mask.float()
        logprobs = (out["logprobs"] * mask).sum(-1).view(-1, 2)  # (pairs, 2)
        ref = (minibatch.ref_logprobs * mask).sum(-1).view(-1, 2)
        lengths = mask.sum(-1).view(-1, 2)
        first = minibatch.extras["first_wins"].view(-1, 2)[:, 0]
        decided = minibatch.extras["decided"].view(-1, 2)[:, 0].float()
        chosen = torch.where(first, 0, 1)[:, None]
        rejected = 1 - chosen
        losses, metrics = combined_preference_loss(
            terms,
            policy_chosen_logps=logprobs.gather(1, chosen).squeeze(1),
            policy_rejected_logps=logprobs.gather(1, rejected).squeeze(1),
            ref_chosen_logps=ref.gather(1, chosen).squeeze(1) if with_reference else None,
            ref_rejected_logps=ref.gather(1, rejected).squeeze(1) if with_reference else None,
            chosen_lengths=lengths.gather(1, chosen).squeeze(1),
            rejected_lengths=lengths.gather(1, rejected).squeeze(1),
            **loss_settings(config),
        )
        metrics["pairs/decided"] = decided.mean()
        return (losses * decided).sum() / decided.sum().clamp(min=1.0), metrics

    return loss_fn


def decided_pairs(minibatch: Experience, config: OnlineDPOConfig) -> float:
    """The pairs the loss averages over (those the judge decided): weighs accumulated minibatches."""
    return float(minibatch.extras["decided"].view(-1, 2)[:, 0].sum())


def run_online_dpo(config: OnlineDPOConfig) -> dict[str, float]:
    """Run online DPO; returns the last step's metrics."""
    if config.group_size != 2:
        from tether.config import ConfigError

        raise ConfigError("field 'group_size': online DPO samples exactly 2 responses per prompt (a pair)")
    return run_online(config, "none", label_pairs, make_online_dpo_loss(config), count_fn=decided_pairs)


def run_iterative_dpo(config: IterativeDPOConfig) -> dict[str, Any]:
    """Iterative DPO (Xu et al. 2023, "Some Things Are More Cringe than Others", §3; Yuan et al. 2024,
    "Self-Rewarding Language Models", §2.3): each round samples ``num_samples`` responses per fresh prompt
    from the current policy (``collect``), labels them with the judge, and runs offline DPO on those
    pairs, against the initial model or the previous round's policy (``reference``). Between the offline
    (one round, fixed data) and online (one step per batch) ends of the same idea.
    """
    from tether.algorithms.collect import run_collect
    from tether.algorithms.dpo import run_dpo
    from tether.config import CollectConfig, DPOConfig, narrow
    from tether.models import load_causal_lm, load_tokenizer

    root = Path(config.output_dir)
    initial, policy_path = config.ref_model or config.model, config.model
    history = []
    gold = resolve_judge(config.gold, config.seed) if config.gold else None
    for round_index in tqdm(range(config.rounds), desc="iterative dpo rounds"):
        folder = root / f"round-{round_index}"
        seed = config.seed + round_index
        collected = run_collect(
            CollectConfig(
                output_dir=str(folder / "collect"),
                policy=policy_path,
                judge=config.judge,
                prompts=config.prompts,
                n_prompts=config.n_prompts,
                num_samples=config.num_samples,
                temperature=config.temperature,
                max_new_tokens=config.max_new_tokens,
                seed=seed,
                trust_remote_code=config.trust_remote_code,
            )
        )
        entry: dict[str, Any] = {"round": round_index, "pairs": collected["pairs"]}
        if gold is not None:
            entry["gold/policy"] = _mean_gold(gold, folder / "collect" / "rankings.jsonl")
        dpo = narrow(
            DPOConfig,
            config,
            model=policy_path,
            ref_model=initial if config.reference == "initial" else "",
            data=str(folder / "collect" / "pairs.jsonl"),
            output_dir=str(folder),
            seed=seed,
        )
        metrics = run_dpo(dpo)
        entry.update({f"dpo/{k}": v for k, v in metrics.items() if "accuracy" in k or "margin" in k})
        history.append(entry)
        tqdm.write(f"iterative dpo round {round_index}: {entry}")
        policy_path = str(folder)
    result: dict[str, Any] = {"rounds": history, "final": policy_path}
    if gold is not None:  # the final policy on the prompts a next round would use
        prompts = load_prompts(config.prompts, config.n_prompts, config.seed + config.rounds)
        result["gold/final"] = sampled_score(
            load_causal_lm(policy_path),
            load_tokenizer(policy_path),
            gold,
            prompts,
            config.max_new_tokens,
            config.temperature,
        )
    return result


def _mean_gold(gold: Any, rankings: Path) -> float:
    """The gold judge's mean score of every response sampled in a round (the policy before its update)."""
    rows = [json.loads(line) for line in rankings.read_text(encoding="utf-8").splitlines()]
    prompts = [r["prompt"] for r in rows for _ in r["completions"]]
    completions = [c for r in rows for c in r["completions"]]
    return mean_score(gold, prompts, completions)
