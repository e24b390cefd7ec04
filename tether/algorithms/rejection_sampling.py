"""Best-of-n and rejection-sampling fine-tuning (RFT): the lectures' self-improvement loop.

Best-of-n: sample n responses, keep the one the judge scores highest. For a continuous reward, the
best-of-n distribution is at KL = log n − (n − 1)/n from the base policy (Stiennon et al. 2020, App. G.3;
Beirami et al. 2024 show this is an upper bound in general, exact when rewards are all distinct).

RFT: for a few rounds, sample n per prompt from the current policy → keep the best by the judge → SFT on
those (Dong et al. 2023 "RAFT"; Gulcehre et al. 2023 "ReST"; Touvron et al. 2023 §3.2.2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tether.config import BestOfNConfig, RFTConfig, SFTConfig, narrow
from tether.data.preference import as_messages
from tether.data.readers import write_jsonl
from tether.eval.aggregate import best_of_n_kl
from tether.eval.policy import mean_score, sampled_score
from tether.models import load_causal_lm, load_tokenizer
from tether.rollout import generate
from tether.specs import load_prompts, resolve_judge


def best_of_n(
    policy: Any,
    tokenizer: Any,
    judge: Any,
    prompts: list,
    n: int,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    batch_size: int = 64,
) -> tuple[list[str], list[float], list[float]]:
    """For each prompt: its best of n sampled completions, that completion's score, and the mean score of
    all n (what a single sample scores on average)."""
    repeated = [p for p in prompts for _ in range(n)]
    completions = generate(
        policy,
        tokenizer,
        repeated,
        max_new_tokens,
        do_sample=True,
        temperature=temperature,
        batch_size=batch_size,
    ).completions
    scores = judge.score(repeated, completions)
    best, best_scores, mean_scores = [], [], []
    for i in range(len(prompts)):
        group = scores[i * n : (i + 1) * n]
        j = max(range(n), key=group.__getitem__)
        best.append(completions[i * n + j])
        best_scores.append(group[j])
        mean_scores.append(sum(group) / n)
    return best, best_scores, mean_scores


def run_best_of_n(config: BestOfNConfig) -> dict[str, float]:
    """Write the best completion of each prompt; report judge (and gold) scores of best-of-n vs one sample."""
    torch.manual_seed(config.seed)
    prompts = load_prompts(config.prompts, config.n_prompts, config.seed, split="eval")
    judge = resolve_judge(config.judge, config.seed, config.trust_remote_code)
    policy = load_causal_lm(config.policy, config.trust_remote_code)
    tokenizer = load_tokenizer(config.policy, config.trust_remote_code)
    best, best_scores, mean_scores = best_of_n(
        policy,
        tokenizer,
        judge,
        prompts,
        config.n,
        config.max_new_tokens,
        config.temperature,
        config.batch_size,
    )
    write_jsonl(
        config.output,
        ({"prompt": p, "completion": c, "score": s} for p, c, s in zip(prompts, best, best_scores)),
    )
    result = {
        "n": config.n,
        "analytic_kl": best_of_n_kl(config.n),
        "judge/best_of_n": sum(best_scores) / len(best_scores),
        "judge/one_sample": sum(mean_scores) / len(mean_scores),
    }
    if config.gold:
        gold = resolve_judge(config.gold, config.seed)
        result["gold/best_of_n"] = mean_score(gold, prompts, best)
    return result


def run_rft(config: RFTConfig) -> dict[str, Any]:
    """Rounds of best-of-n selection and SFT; returns the per-round judge and gold scores."""
    from tether.algorithms.sft import run_sft

    judge = resolve_judge(config.judge, config.seed, config.trust_remote_code)
    gold = resolve_judge(config.gold, config.seed) if config.gold else None
    root = Path(config.output_dir)
    policy_path = config.model
    history = []
    for round_index in tqdm(range(config.rounds), desc="rft rounds"):
        torch.manual_seed(config.seed + round_index)
        prompts = load_prompts(config.prompts, config.n_prompts, config.seed + round_index)
        policy = load_causal_lm(policy_path, config.trust_remote_code)
        tokenizer = load_tokenizer(policy_path, config.trust_remote_code)
        best, best_scores, mean_scores = best_of_n(
            policy, tokenizer, judge, prompts, config.n, config.max_new_tokens, config.temperature
        )
        entry = {
            "round": round_index,
            "judge/one_sample": sum(mean_scores) / len(mean_scores),
            "judge/selected": sum(best_scores) / len(best_scores),
        }
        if gold is not None:
            entry["gold/policy"] = sampled_score(
                policy, tokenizer, gold, prompts, config.max_new_tokens, config.temperature
            )
        history.append(entry)
        tqdm.write(f"rft round {round_index}: {entry}")
        data = write_jsonl(
            root / f"round-{round_index}" / "selected.jsonl",
            ({"messages": as_messages(p, c)} for p, c in zip(prompts, best)),
        )
        round_config = narrow(
            SFTConfig,
            config,
            model=policy_path,
            data=str(data),
            eval_data="",
            output_dir=str(root / f"round-{round_index}"),
        )
        run_sft(round_config)
        policy_path = round_config.output_dir
    return {"rounds": history, "final": policy_path}
