"""The lectures' ladder of language models on one footing: an n-gram model, an RNN and a Transformer
(pre-trained, and after SFT), each scored on the same held-out plain text and sampled the same way.

- perplexity per word: exp(total NLL of the held-out documents / their words), each document's end
  counted as one more word — the n-gram model's own normalisation (``NGramLM.perplexity``). A neural LM
  reads each document after an end-of-text token (the boundary it saw in packed pre-training) and is
  charged for every token of the document and for the end-of-text token after it, so all models pay for
  the same words and the same stop;
- continuations: the first words of a few held-out documents, continued by repeated sampling at
  temperature 1 (neural LMs: the same sampler and options as every tether stage);
- parameters: trainable numbers (tied weights once); for the n-gram model, the counts it stores.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch

from tether.data.tokenize import TokenizedExample, pad_collate
from tether.eval.metrics import NGramLM
from tether.models.forward import token_logprobs
from tether.rollout import generate


def words_in(texts: Sequence[str]) -> int:
    """The events per-word perplexity divides by: the words of each text plus its end."""
    return sum(len(text.split()) + 1 for text in texts)


@torch.no_grad()
def text_nll(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32) -> float:
    """Total −log p of each text and the end-of-text token after it, each read after an end-of-text token."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("scoring plain text needs a tokenizer with an end-of-text token")
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    rows = [TokenizedExample([eos, *ids, eos], [eos, *ids, eos]) for ids in encoded]
    model.eval()
    total = 0.0
    for start in range(0, len(rows), batch_size):
        batch = pad_collate(rows[start : start + batch_size], tokenizer.pad_token_id)
        total -= float(
            token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"]).sum()
        )
    return total


def perplexity_per_word(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32) -> float:
    """exp(:func:`text_nll` / :func:`words_in`): comparable with ``NGramLM.perplexity`` on the same texts."""
    return math.exp(text_nll(model, tokenizer, texts, batch_size) / words_in(texts))


def continuation_prompts(texts: Sequence[str], n: int = 3, words: int = 4) -> list[str]:
    """The first ``words`` words of the first ``n`` texts that open differently."""
    openings: list[str] = []
    for text in texts:
        opening = " ".join(text.split()[:words])
        if opening not in openings:
            openings.append(opening)
        if len(openings) == n:
            break
    return openings


def sample_continuations(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 48, seed: int = 0
) -> list[str]:
    """Each plain-text prompt (after an end-of-text token) continued by sampling at temperature 1."""
    torch.manual_seed(seed)
    result = generate(
        model,
        tokenizer,
        [tokenizer.eos_token + prompt for prompt in prompts],
        max_new_tokens=max_new_tokens,
        do_sample=True,
        chat=False,
    )
    return result.completions


def count_parameters(model: Any) -> int:
    """Trainable numbers of a model, a weight shared by two layers (tied embeddings) counted once."""
    return sum(p.numel() for p in model.parameters())


def ngram_rung(
    ngram: NGramLM, texts: Sequence[str], prompts: Sequence[str], seconds: float, seed: int = 0
) -> dict[str, Any]:
    """The n-gram model's row of the ladder."""
    rng = random.Random(seed)
    return {
        "ppl_per_word": ngram.perplexity(texts),
        "parameters": ngram.size,
        "train_seconds": seconds,
        "samples": [{"prompt": p, "completion": ngram.sample(p, rng)} for p in prompts],
    }


def neural_rung(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    prompts: Sequence[str],
    seconds: float | None,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """A neural LM's row of the ladder (``seconds``: its training time, None when unknown)."""
    completions = sample_continuations(model, tokenizer, prompts, seed=seed)
    return {
        "ppl_per_word": perplexity_per_word(model, tokenizer, texts, batch_size),
        "parameters": count_parameters(model),
        "train_seconds": seconds,
        "samples": [{"prompt": p, "completion": c} for p, c in zip(prompts, completions)],
    }
