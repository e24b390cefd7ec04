"""What matters about an aligned policy, measured on held-out prompts:

- gold reward: the hidden judge's mean score of the policy's samples;
- proxy reward: a reward model's mean score of the same samples (when given);
- KL to the reference: the Monte-Carlo estimate E_{y~π}[log π(y|x) − log π_ref(y|x)] (summed over the
  response tokens, k1 estimator) from the same samples;
- response length (tokens), the share of samples that stopped on their own, and distinct-2 diversity;
- the gold score of every sample (``gold_scores``), for win rates against another policy's samples.
"""

from __future__ import annotations

from typing import Any

import torch

from tether.data.packing import pack_examples, sequence_sums
from tether.data.templates import render_prompt
from tether.data.tokenize import TokenizedExample
from tether.eval.metrics import distinct_n
from tether.models.forward import token_logprobs
from tether.ops.logprobs import IGNORE_INDEX, shift_labels
from tether.rollout import generate


@torch.no_grad()
def response_logps(
    model: Any, tokenizer: Any, prompts: list, response_ids: list[list[int]], batch_size: int = 64
) -> list[float]:
    """log π(y|x) summed over the response tokens, for sampled token ids (no re-tokenisation of the text)."""
    examples = []
    for prompt, ids in zip(prompts, response_ids):
        prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        examples.append(TokenizedExample(prompt_ids + ids, [IGNORE_INDEX] * len(prompt_ids) + ids))
    model.eval()
    values: list[float] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = pack_examples(chunk, tokenizer.pad_token_id, 512)
        logprobs = token_logprobs(
            model, batch["input_ids"], None, batch["labels"], position_ids=batch["position_ids"]
        )
        mask = shift_labels(batch["labels"]) != IGNORE_INDEX
        values += sequence_sums(logprobs, mask, batch["segment"], len(chunk)).tolist()
    return values


def sampled_score(
    policy: Any,
    tokenizer: Any,
    judge: Any,
    prompts: list,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    batch_size: int = 32,
) -> float:
    """The judge's mean score of one response per prompt sampled from ``policy`` at ``temperature``."""
    result = generate(policy, tokenizer, prompts, max_new_tokens, True, temperature, batch_size=batch_size)
    return mean_score(judge, prompts, result.completions)


def mean_score(judge: Any, prompts: list, completions: list[str]) -> float:
    """The judge's mean score of ``completions`` (one per prompt)."""
    return sum(judge.score(prompts, completions)) / len(completions)


def evaluate_policy(
    policy: Any,
    reference: Any,
    tokenizer: Any,
    gold: Any,
    prompts: list,
    proxy: Any | None = None,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Sample one response per prompt at ``temperature`` and measure it (see the module docstring)."""
    torch.manual_seed(seed)
    result = generate(
        policy,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        batch_size=batch_size,
    )
    gold_scores = gold.score(prompts, result.completions)
    policy_logps = response_logps(policy, tokenizer, prompts, result.response_ids, batch_size)
    ref_logps = response_logps(reference, tokenizer, prompts, result.response_ids, batch_size)
    kl = [p - r for p, r in zip(policy_logps, ref_logps)]
    metrics = {
        "gold": sum(gold_scores) / len(gold_scores),
        "kl": sum(kl) / len(kl),
        "length": sum(len(ids) for ids in result.response_ids) / len(prompts),
        "stop_rate": sum(result.finished) / len(prompts),
        "distinct_2": distinct_n(result.completions, 2),
        "gold_scores": gold_scores,
        "samples": [{"prompt": p, "completion": c} for p, c in zip(prompts[:4], result.completions[:4])],
    }
    if proxy is not None:
        proxy_scores = proxy.score(prompts, result.completions)
        metrics["proxy"] = sum(proxy_scores) / len(proxy_scores)
    return metrics
