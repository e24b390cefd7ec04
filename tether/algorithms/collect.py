"""Collect preferences: sample K responses per prompt from the policy, rank them with a judge, and write
rankings (``rankings.jsonl``) and the pairs they imply (``pairs.jsonl``) — the lectures' data-gathering step.

The judge plays the human: the gym's gold reward, a Python function, a reward model, or an LLM judge
(RLAIF; a pairwise judge ranks the K samples by their mean probability of beating the others).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tether.config import CollectConfig, save_config
from tether.data.preference import preference_rows, rankings_to_pairs
from tether.data.readers import write_jsonl
from tether.judges import ranks_from_scores
from tether.models import load_causal_lm, load_tokenizer
from tether.rollout import generate
from tether.specs import load_prompts, resolve_judge


def run_collect(config: CollectConfig) -> dict[str, float]:
    """Write rankings and pairs; return how many and the judge's mean score of the samples."""
    prompts = load_prompts(config.prompts, config.n_prompts, config.seed, config.split)
    judge = resolve_judge(config.judge, config.seed, config.trust_remote_code)
    policy = load_causal_lm(config.policy, config.trust_remote_code)
    tokenizer = load_tokenizer(config.policy, config.trust_remote_code)

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    repeated = [p for p in prompts for _ in range(config.num_samples)]  # (N = B·K), groups adjacent
    completions: list[str] = []
    for start in tqdm(range(0, len(repeated), config.batch_size), desc="collect: sampling", unit="batch"):
        chunk = repeated[start : start + config.batch_size]
        result = generate(
            policy,
            tokenizer,
            chunk,
            max_new_tokens=config.max_new_tokens,
            do_sample=True,
            temperature=config.temperature,
            top_p=config.top_p,
            batch_size=config.batch_size,
        )
        completions += result.completions
    scores = judge.score(repeated, completions)

    rankings, pairs = [], []
    k = config.num_samples
    for index, prompt in enumerate(prompts):
        group = slice(index * k, (index + 1) * k)
        texts, group_scores = completions[group], scores[group]
        ranks = ranks_from_scores(group_scores)
        rankings.append({"prompt": prompt, "completions": texts, "ranks": ranks, "scores": group_scores})
        pairs += rankings_to_pairs(prompt, texts, ranks)
    out = Path(config.output_dir)
    write_jsonl(out / "rankings.jsonl", rankings)
    write_jsonl(out / "pairs.jsonl", preference_rows(pairs))
    save_config(config, out / "tether_config.yaml")
    return {"prompts": len(prompts), "pairs": len(pairs), "mean_score": sum(scores) / len(scores)}
