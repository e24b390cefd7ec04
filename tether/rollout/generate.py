"""Batched generation with the KV cache: chat-templated prompts, left padding, stop at EOS / end of turn.
Llama-family models take the lean path of ``rollout/sampler.py``, tether's RNN the step-by-step sampler of
``rollout/recurrent.py``; others ``generate``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessorList

from tether.data.templates import render_prompt
from tether.rollout import recurrent, sampler

# What ``generate`` would otherwise take from transformers' defaults or a checkpoint's generation config
# (top_k=50, a repetition penalty, a minimum length, …): set to no-ops, so samples follow π^(1/T) — top-p
# aside — as the log-probs, importance ratios and KL estimates assume, and greedy decoding is plain argmax.
# ``min_new_tokens`` takes precedence over a checkpoint's ``min_length``; passing both would only make
# transformers warn on every call that both were set.
PLAIN_DECODING = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_new_tokens": 0}
PLAIN_SAMPLING = {
    **PLAIN_DECODING,
    "top_k": 0,
    "typical_p": 1.0,
    "min_p": 0.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}


@dataclass
class GenerationResult:
    """Completions of N prompts."""

    completions: list[str]  # decoded response text, special tokens removed
    finished: list[bool]  # did the response end with a stop token (EOS / end of turn)?
    response_ids: list[list[int]]  # response token ids, stop token included when produced


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Ids that end a response: the generation config's EOS ids, the tokenizer's EOS, and ``<|im_end|>``."""
    ids = model.generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    im_end = tokenizer.get_vocab().get("<|im_end|>")
    if im_end is not None:
        found.add(im_end)
    return sorted(found)


def sample_responses(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    stops: list[int],
    pad_token_id: int,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    logits_processors: list[Any] | None = None,
) -> torch.Tensor:
    """Response token ids (N, A) after the left-padded prompts ``input_ids`` (N, P), padded only after a
    stop token: the lean sampler (``rollout/sampler.py``) for the models it covers, the recurrent one
    (``rollout/recurrent.py``) for tether's RNN, else ``generate`` with the plain settings above.
    ``logits_processors`` (``transformers`` API) run on each step's logits."""
    fast = sampler if sampler.supports(model) else recurrent if recurrent.supports(model) else None
    if fast is not None:
        return fast.sample_tokens(
            model,
            input_ids,
            attention_mask,
            max_new_tokens,
            stops,
            pad_token_id,
            temperature,
            top_p,
            do_sample=do_sample,
            logits_processors=logits_processors,
        )
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p, **PLAIN_SAMPLING}
        if do_sample
        else {"do_sample": False, **PLAIN_DECODING}
    )
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        eos_token_id=stops,
        pad_token_id=pad_token_id,
        logits_processor=LogitsProcessorList(logits_processors) if logits_processors else None,
        **sampling,
    )
    return output[:, input_ids.shape[1] :]


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    chat: bool = True,
) -> GenerationResult:
    """Complete each prompt (rendered with the chat template when ``chat``), in batches of ``batch_size``."""
    stops = stop_token_ids(model, tokenizer)
    texts = [render_prompt(tokenizer, p) if chat else p for p in prompts]
    was_training = model.training
    model.eval()
    completions, finished, response_ids = [], [], []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            batch = {k: v.to(model.device) for k, v in batch.items()}
            responses = sample_responses(
                model,
                batch["input_ids"],
                batch["attention_mask"],
                max_new_tokens,
                stops,
                tokenizer.pad_token_id,
                do_sample,
                temperature,
                top_p,
            )
            for row in responses.tolist():
                ids, done = [], False
                for token in row:
                    ids.append(token)
                    if token in stops:
                        done = True
                        break
                response_ids.append(ids)
                finished.append(done)
                completions.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return GenerationResult(completions, finished, response_ids)
