"""A lean sampler for Llama-family decoders: the same model, the same weights, a shorter path per token.

On a CPU with a small policy, ``generate`` spends most of each decoding step in per-operation overhead
(module calls, mask and cache bookkeeping), not in arithmetic. This sampler reads the layers' weights in
place (no copy) and runs each step as the bare sequence of operations of a Llama block — RMSNorm, q/k/v
projections, rotary embedding (the model's own ``rotary_emb``, so every RoPE variant it supports), a
KV cache preallocated for the whole generation, SDPA, the gated MLP — then samples the next token from
softmax(logits / T), optionally top-p filtered, by one uniform draw per row (inverse CDF). Logits
processors (``transformers`` API: ``(input_ids, scores) → scores``) run on each step's logits before the
temperature, as in ``generate``. Greedy decoding gives ``generate``'s tokens exactly (tested).

Models it does not cover (other architectures, LoRA or quantised layers, sliding-window attention, MLP
biases, several devices) use ``generate``: see :func:`supports`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FAST_MODEL_TYPES = ("llama", "qwen2")


def supports(model: Any) -> bool:
    """Whether :func:`sample_tokens` can run ``model`` exactly (else use ``generate``): a Llama or Qwen2
    decoder on one device whose projections are plain ``nn.Linear`` (no LoRA, no quantised layers), with
    full attention in every layer and a SiLU-gated MLP without biases."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in FAST_MODEL_TYPES:
        return False
    if hasattr(model, "get_base_model") or getattr(model, "hf_quantizer", None) is not None:
        return False
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return False
    if getattr(config, "use_sliding_window", False) or getattr(config, "mlp_bias", False):
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return False
    if len(set(getattr(model, "hf_device_map", {}).values())) > 1:
        return False
    base = getattr(model, "model", None)
    if getattr(base, "layers", None) is None or not hasattr(base, "rotary_emb"):
        return False
    projections = [getattr(model, "lm_head", None)]
    for layer in base.layers:
        attention, mlp = layer.self_attn, layer.mlp
        projections += [attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj]
        projections += [mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    return all(type(p) is nn.Linear for p in projections)


def _rms_norm(x: torch.Tensor, norm: Any) -> torch.Tensor:
    """The model's RMSNorm: x·rsqrt(mean(x²) + ε)·w, computed in fp32 as transformers does."""
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return norm.weight * (x.float() * torch.rsqrt(variance + norm.variance_epsilon)).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Cache:
    """Keys and values of every layer, (N, H_kv, capacity, D) each, filled left to right."""

    def __init__(self, layers: int, n: int, heads: int, capacity: int, dim: int, like: torch.Tensor) -> None:
        self.keys = [like.new_empty(n, heads, capacity, dim) for _ in range(layers)]
        self.values = [like.new_empty(n, heads, capacity, dim) for _ in range(layers)]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a boolean mask, or indices over the batch, repeats allowed)."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]


def _forward(
    model: Any,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    cache: _Cache,
    start: int,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Logits of the last position, (N, V), after writing the K/V of ``input_ids`` (N, S) at cache
    columns start … start+S−1. ``mask`` (N, 1, S, start+S) bool: which cached columns each query sees."""
    config, base = model.config, model.model
    n, s = input_ids.shape
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    x = base.embed_tokens(input_ids)
    cos, sin = base.rotary_emb(x, position_ids)
    cos, sin = cos[:, None], sin[:, None]  # (N, 1, S, D)
    end = start + s
    for index, layer in enumerate(base.layers):
        attention = layer.self_attn
        h = _rms_norm(x, layer.input_layernorm)
        q = F.linear(h, attention.q_proj.weight, attention.q_proj.bias).view(n, s, heads, dim).transpose(1, 2)
        k = (
            F.linear(h, attention.k_proj.weight, attention.k_proj.bias)
            .view(n, s, kv_heads, dim)
            .transpose(1, 2)
        )
        v = (
            F.linear(h, attention.v_proj.weight, attention.v_proj.bias)
            .view(n, s, kv_heads, dim)
            .transpose(1, 2)
        )
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        cache.keys[index][:, :, start:end] = k
        cache.values[index][:, :, start:end] = v
        keys, values = cache.keys[index][:, :, :end], cache.values[index][:, :, :end]
        grouped = heads != kv_heads and keys.device.type == "cpu"  # elsewhere SDPA + GQA + mask → math path
        if heads != kv_heads and not grouped:
            keys = keys.repeat_interleave(heads // kv_heads, dim=1)
            values = values.repeat_interleave(heads // kv_heads, dim=1)
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, scale=attention.scaling, enable_gqa=grouped
        )
        out = out.transpose(1, 2).reshape(n, s, heads * dim)
        x = x + F.linear(out, attention.o_proj.weight, attention.o_proj.bias)
        h = _rms_norm(x, layer.post_attention_layernorm)
        mlp = layer.mlp
        x = x + F.linear(
            F.silu(F.linear(h, mlp.gate_proj.weight)) * F.linear(h, mlp.up_proj.weight), mlp.down_proj.weight
        )
    return model.lm_head(_rms_norm(x[:, -1], base.norm)).float()


def _draw(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """One token per row from softmax(scores), restricted to the top-p nucleus when top_p < 1: the first
    token whose cumulative probability (float64, so no tail token rounds away) reaches u·total, with u
    uniform on (0, 1] — a token of probability 0 can never be the first to reach it."""
    probs = torch.softmax(scores, dim=-1)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(-1) - probs  # mass of the more likely tokens
        probs = probs.masked_fill(before >= top_p, 0.0)  # the most likely always stays
    cdf = probs.double().cumsum(-1)
    u = (1.0 - torch.rand(probs.shape[0], 1, device=probs.device, dtype=torch.float64)) * cdf[:, -1:]
    picked = torch.searchsorted(cdf, u).clamp(max=probs.shape[-1] - 1)
    return (picked if order is None else order.gather(-1, picked)).squeeze(-1)


@torch.no_grad()
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
    """Responses (N, A ≤ max_new_tokens) to left-padded prompts ``input_ids`` (N, P), as ``generate``
    returns them after the prompt: a row's stop token is kept, everything after it is ``pad_token_id``;
    generation ends when every row has stopped. ``do_sample=False`` is greedy decoding.

    Rows that have stopped leave the running batch once a quarter of it has (not with logits processors,
    which keep state for the whole batch); a prompt repeated across rows is prefilled once."""
    config = model.config
    n, prompt_length = input_ids.shape
    if max_new_tokens <= 0:
        return input_ids.new_empty(n, 0)
    heads = config.num_attention_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    capacity = prompt_length + max_new_tokens
    real = torch.zeros(n, capacity, dtype=torch.bool, device=input_ids.device)  # which columns hold tokens
    real[:, :prompt_length] = attention_mask.bool()
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    # A prompt repeated (the G samples of a group) is prefilled once, and its cache copied to its rows.
    rows = torch.cat([input_ids, attention_mask.to(input_ids.dtype)], dim=1)
    unique, row_of = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((len(unique),), n, dtype=torch.long, device=input_ids.device)
    first = first.scatter_reduce(0, row_of, torch.arange(n, device=input_ids.device), reduce="amin")
    cache = _Cache(
        len(model.model.layers),
        len(first),
        config.num_key_value_heads,
        capacity,
        dim,
        model.model.layers[0].self_attn.k_proj.weight,
    )
    causal = torch.ones(prompt_length, prompt_length, dtype=torch.bool, device=input_ids.device).tril()
    # A padding query sees itself, so no attention row is empty (its output is never used).
    prefill_mask = (causal & real[first, None, :prompt_length]) | torch.eye(
        prompt_length, dtype=torch.bool, device=input_ids.device
    )
    logits = _forward(model, input_ids[first], position_ids[first], cache, 0, prefill_mask[:, None])
    cache.select(row_of)
    logits = logits[row_of]
    next_position = position_ids[:, -1:] + 1
    stops = torch.tensor(list(stop_ids), device=input_ids.device)
    done = torch.zeros(n, dtype=torch.bool, device=input_ids.device)
    active = torch.arange(n, device=input_ids.device)  # rows still in the batch the model runs on
    sequence, generated = input_ids, []
    for step in range(max_new_tokens):
        scores = logits
        for processor in logits_processors or ():  # on the raw logits, before temperature (as generate)
            scores = processor(sequence, scores)
        drawn = _draw(scores / temperature, top_p) if do_sample else scores.argmax(-1)
        drawn = drawn.masked_fill(done[active], pad_token_id)
        token = torch.full((n,), pad_token_id, dtype=drawn.dtype, device=drawn.device)
        token[active] = drawn
        generated.append(token)
        done |= torch.isin(token, stops)
        if done.all() or step == max_new_tokens - 1:
            break
        if logits_processors:  # they keep state for the whole batch: no row leaves it
            sequence = torch.cat([sequence, token[:, None]], dim=1)
        elif 4 * int(done[active].sum()) >= len(active):  # a quarter has stopped: drop them
            keep = ~done[active]
            active, drawn, next_position, real = active[keep], drawn[keep], next_position[keep], real[keep]
            cache.select(keep)
        column = prompt_length + step
        real[:, column] = True
        logits = _forward(
            model, drawn[:, None], next_position, cache, column, real[:, None, None, : column + 1]
        )
        next_position = next_position + 1
    return torch.stack(generated, dim=1)
