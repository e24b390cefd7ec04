"""Sampling from a recurrent LM (``models/rnn.py``) by repeated sampling: run the prompt once, then feed
each sampled token back as the next step's input, carrying the state — one step per token, no re-reading.

The decoding options are those of the lean sampler (``rollout/sampler.py``) and of ``generate``:
temperature, top-p, greedy (``do_sample=False``), and ``transformers`` logits processors run on each step's
raw logits before the temperature; the token is drawn by the same inverse-CDF draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tether.models.rnn import is_rnn
from tether.rollout.sampler import _draw


def supports(model: Any) -> bool:
    """Whether ``model`` is a tether RNN (not wrapped by LoRA) that :func:`sample_tokens` can run."""
    return is_rnn(model) and not hasattr(model, "get_base_model")


def sample_tokens(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    logits_processors: Sequence[Any] | None = None,
) -> torch.Tensor:
    """Responses (N, A ≤ max_new_tokens) to the padded prompts ``input_ids`` (N, P) (padding on either
    side; every prompt needs a token), as ``generate`` returns them after the prompt: a row's stop token is
    kept, everything after it is ``pad_token_id``; generation ends when every row has stopped."""
    n = input_ids.shape[0]
    if max_new_tokens <= 0:
        return input_ids.new_empty(n, 0)
    if not bool(attention_mask.bool().any(-1).all()):
        raise ValueError("every prompt needs at least one token")
    backbone, head = model.get_decoder(), model.get_output_embeddings()
    with torch.inference_mode():
        prompt = backbone(input_ids=input_ids, attention_mask=attention_mask)
        last = (
            attention_mask.long() * torch.arange(1, input_ids.shape[1] + 1, device=input_ids.device)
        ).argmax(-1)
        hidden, state = prompt.last_hidden_state[torch.arange(n, device=input_ids.device), last], prompt.state
        stops = torch.tensor(list(stop_ids), device=input_ids.device)
        out = torch.full((n, max_new_tokens), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
        stopped = torch.zeros(n, dtype=torch.bool, device=input_ids.device)
        sequence = input_ids
        for step in range(max_new_tokens):
            scores = head(hidden).float()  # (N, V): the distribution of the next token
            for processor in logits_processors or ():
                scores = processor(sequence, scores)
            if temperature != 1.0:
                scores = scores / temperature
            drawn = _draw(scores, top_p) if do_sample else scores.argmax(-1)
            drawn = drawn.masked_fill(stopped, pad_token_id)
            out[:, step] = drawn
            stopped |= torch.isin(drawn, stops)
            if bool(stopped.all()) or step == max_new_tokens - 1:
                break
            if logits_processors:
                sequence = torch.cat([sequence, drawn[:, None]], dim=1)
            hidden, state = backbone.step(drawn, state)  # the sampled token is the next step's input
        tokens = out[:, : step + 1]
    return tokens.clone()
