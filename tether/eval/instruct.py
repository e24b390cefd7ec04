"""How well a model answers held-out instructions of a gym task.

- ``response_nll``: mean negative log-likelihood per response token of the held-out reference responses
  given their prompts (chat-templated, as SFT sees them). Lower is better.
- ``follow_rate``: of greedy answers to held-out prompts, the fraction that stop on their own (end of turn)
  and do what the task asks: for reviews, mention the product asked about; for arithmetic, give the right sum.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tether.data.formats import parse_sft
from tether.data.readers import Record
from tether.data.templates import ensure_chat_template
from tether.data.tokenize import pad_collate, tokenize_sft
from tether.gym import ArithmeticTask, ReviewsTask, Task
from tether.losses.lm import nll_loss
from tether.models.forward import token_logprobs
from tether.ops.logprobs import IGNORE_INDEX, shift_labels
from tether.rollout import generate


@torch.no_grad()
def response_nll_sum(
    model: Any, tokenizer: Any, examples: list[dict], batch_size: int = 32, max_length: int = 256
) -> tuple[float, float]:
    """Total NLL of the response tokens of ``examples`` (SFT records) under ``model``, and their count."""
    ensure_chat_template(tokenizer)
    tokenized = [
        tokenize_sft(tokenizer, parse_sft(Record(e, "eval", i)), max_length) for i, e in enumerate(examples)
    ]
    tokenized = [t for t in tokenized if t is not None]
    total, count = 0.0, 0.0
    model.eval()
    for start in range(0, len(tokenized), batch_size):
        batch = pad_collate(tokenized[start : start + batch_size], tokenizer.pad_token_id)
        logprobs = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        nll_sum, n_tokens, _ = nll_loss(logprobs, shift_labels(batch["labels"]) != IGNORE_INDEX)
        total += float(nll_sum.sum())
        count += float(n_tokens.sum())
    return total, count


def response_nll(
    model: Any, tokenizer: Any, examples: list[dict], batch_size: int = 32, max_length: int = 256
) -> float:
    """Mean NLL per response token of ``examples`` under ``model``."""
    total, count = response_nll_sum(model, tokenizer, examples, batch_size, max_length)
    return total / max(count, 1.0)


def follows(task: Task, prompt: str, completion: str) -> bool:
    """Does ``completion`` do what ``prompt`` asks (before any alignment for preferences)?"""
    if isinstance(task, ArithmeticTask):
        return task.is_correct(prompt, completion)
    if isinstance(task, ReviewsTask):
        product = task.product_of(prompt)
        return product is not None and product in completion
    raise ValueError(f"no instruction-following check for task {task.name!r}")


def evaluate_instruct(
    model: Any,
    tokenizer: Any,
    task: Task,
    n_examples: int = 200,
    n_prompts: int = 64,
    max_new_tokens: int = 64,
    batch_size: int = 32,
) -> dict[str, Any]:
    """``response_nll`` and ``follow_rate`` on the task's eval split, with a few sample answers."""
    examples = task.sft_examples("eval")[:n_examples]
    total, count = response_nll_sum(model, tokenizer, examples, batch_size)
    prompts = task.prompts("eval", n=n_prompts)
    result = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    good = [done and follows(task, p, c) for p, c, done in zip(prompts, result.completions, result.finished)]
    return {
        "response_nll": total / max(count, 1.0),
        # Per word (end of turn counted as one), comparable with the n-gram baseline's perplexity.
        "response_ppl_per_word": math.exp(
            total / sum(len(e["messages"][-1]["content"].split()) + 1 for e in examples)
        ),
        "follow_rate": sum(good) / len(good),
        "stop_rate": sum(result.finished) / len(result.finished),
        "samples": [{"prompt": p, "completion": c} for p, c in zip(prompts[:4], result.completions[:4])],
    }
