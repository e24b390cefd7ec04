"""A lean sampler for Llama-family decoders: the same model, the same weights, a shorter path per token.

On a CPU with a small policy, ``generate`` spends most of each decoding step in per-operation overhead
(module calls, mask and cache bookkeeping), not in arithmetic. This sampler runs each step as the bare
sequence of operations of a Llama block, with as few operations as it can:

- the q/k/v projections stacked into one matrix (q's rows pre-scaled by the attention scaling) and the
  gate/up projections into another: copies made once per call (their size is that of those projections),
  freed after it;
- fp32 RMSNorm as one fused operation;
- rotary embedding from cos/sin tables of every position the call will need, made once from the model's
  own ``rotary_emb`` (so every RoPE variant it supports), applied as q·cos + roll(q)·signed sin;
- a KV cache preallocated for the whole generation; a step's attention is one batched matmul over
  (rows, K/V heads, the query heads sharing each), with an additive mask over the prompts' padding;
- residual additions fused into the output projections (``addmm``); no autograd (inference mode).

It samples the next token from softmax(logits / T), optionally top-p filtered, by one uniform draw per row
(inverse CDF). Logits processors (``transformers`` API: ``(input_ids, scores) → scores``) run on each
step's logits before the temperature, as in ``generate``. Greedy decoding gives ``generate``'s tokens
exactly (tested here, and on SmolLM2-135M-Instruct).

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
# RoPE variants whose frequencies depend on the longest position in the call: the sampler makes the tables
# of every position at once, so they would be rescaled from the first token on, unlike in ``generate``.
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


def supports(model: Any) -> bool:
    """Whether :func:`sample_tokens` can run ``model`` exactly (else use ``generate``): a Llama or Qwen2
    decoder on one device whose projections are plain ``nn.Linear`` (no LoRA, no quantised layers), with
    full attention in every layer, a SiLU-gated MLP without biases, and a RoPE whose frequencies do not
    depend on the sequence's length (not ``dynamic`` or ``longrope``)."""
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
    rope = getattr(base.rotary_emb, "rope_type", "default")  # one type, or one per layer type
    if any(kind in LENGTH_DEPENDENT_ROPE for kind in (rope.values() if isinstance(rope, dict) else [rope])):
        return False
    projections = [getattr(model, "lm_head", None)]
    for layer in base.layers:
        attention, mlp = layer.self_attn, layer.mlp
        projections += [attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj]
        projections += [mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    return all(type(p) is nn.Linear for p in projections)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The model's RMSNorm, x·rsqrt(mean(x²) + ε)·w, computed in fp32 as transformers does (one fused
    operation for fp32 models)."""
    if x.dtype == torch.float32:
        return torch.rms_norm(x, weight.shape, weight, eps)
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return weight * (x.float() * torch.rsqrt(variance + eps)).to(x.dtype)


class _Layer:
    """One decoder layer's weights as the step reads them: the q, k and v projections stacked into one
    matrix (q's rows scaled by the attention scaling), the gate and up projections into another. These
    are copies, made once per call and freed after it."""

    def __init__(self, layer: Any) -> None:
        attention, mlp = layer.self_attn, layer.mlp
        q, k, v, scale = attention.q_proj, attention.k_proj, attention.v_proj, attention.scaling
        self.qkv = torch.cat([q.weight * scale, k.weight, v.weight])
        self.qkv_bias = None if q.bias is None else torch.cat([q.bias * scale, k.bias, v.bias])
        self.out_t, self.out_bias = attention.o_proj.weight.t(), attention.o_proj.bias
        self.gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        self.down_t = mlp.down_proj.weight.t()
        self.norm_in = (layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
        self.norm_mid = (
            layer.post_attention_layernorm.weight,
            layer.post_attention_layernorm.variance_epsilon,
        )


class _Decoder:
    """The model's forward, layer by layer, over a KV cache: keys and values of every layer,
    (N, H_kv, capacity, D) each, filled left to right."""

    def __init__(self, model: Any, rows: int, capacity: int) -> None:
        config, base = model.config, model.model
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.layers = [_Layer(layer) for layer in base.layers]
        self.embed, self.rotary = base.embed_tokens.weight, base.rotary_emb
        self.norm = (base.norm.weight, base.norm.variance_epsilon)
        self.head = model.lm_head.weight
        like = base.layers[0].self_attn.k_proj.weight  # the cache takes the attention's dtype
        shape = (rows, self.kv_heads, capacity, self.dim)
        self.keys = [like.new_empty(shape) for _ in self.layers]
        self.values = [like.new_empty(shape) for _ in self.layers]

    def select(self, rows: torch.Tensor, used: int, capacity: int) -> None:
        """Keep only ``rows`` of the cache (a boolean mask, or indices over the batch, repeats allowed),
        copying its first ``used`` columns into a cache of ``capacity`` columns."""

        def pick(cache: torch.Tensor) -> torch.Tensor:
            kept = cache.narrow(2, 0, used)[rows]
            out = kept.new_empty(kept.shape[0], kept.shape[1], capacity, kept.shape[3])
            out.narrow(2, 0, used).copy_(kept)
            return out

        self.keys = [pick(k) for k in self.keys]
        self.values = [pick(v) for v in self.values]

    def rotary_tables(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin of the model's rotary embedding at ``position_ids`` (N, S): (N, S, 1, D)
        each. The first half of sin is negated, so that rotate_half(x)·sin = roll(x, D/2)·signed sin."""
        cos, sin = self.rotary(self.embed, position_ids)
        sin = torch.cat([-sin[..., : self.dim // 2], sin[..., self.dim // 2 :]], dim=-1)
        return cos[:, :, None], sin[:, :, None]

    def __call__(
        self,
        input_ids: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        start: int,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Logits of the last position, (N, V), after writing the K/V of ``input_ids`` (N, S) at cache
        columns start … start+S−1. ``rotary``: :meth:`rotary_tables` of the S positions. ``mask``: for
        S > 1, (N, 1, S, start+S) bool, which cached columns each query sees; for one new token, (N, 1, 1,
        start+1) additive (0 or −inf)."""
        n, s = input_ids.shape
        heads, kv_heads, dim = self.heads, self.kv_heads, self.dim
        both = heads + kv_heads  # the heads rotary embedding applies to
        cos, sin = rotary
        x = F.embedding(input_ids, self.embed).view(n * s, -1)
        end = start + s
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            h = _rms_norm(x, *layer.norm_in)
            y = F.linear(h, layer.qkv, layer.qkv_bias).view(n, s, -1, dim)
            qk = y[:, :, :both]
            rotated = (qk * cos).addcmul_(qk.roll(dim // 2, dims=-1), sin)  # (N, S, H+H_kv, D)
            k, v = rotated[:, :, heads:].transpose(1, 2), y[:, :, both:].transpose(1, 2)
            keys.narrow(2, start, s).copy_(k)
            values.narrow(2, start, s).copy_(v)
            if s == 1:  # one query per row: the G query heads of a K/V head attend as one (N, H_kv, G) batch
                q = rotated[:, 0, :heads].view(n, kv_heads, heads // kv_heads, dim)
                scores = torch.matmul(q, keys.narrow(2, 0, end).transpose(2, 3)).add_(mask)
                out = torch.matmul(torch.softmax(scores, dim=-1), values.narrow(2, 0, end))
                out = out.view(n, heads * dim)
            else:
                q = rotated[:, :, :heads].transpose(1, 2)
                k, v = keys.narrow(2, 0, end), values.narrow(2, 0, end)
                grouped = heads != kv_heads and k.device.type == "cpu"  # elsewhere GQA + mask → math path
                if heads != kv_heads and not grouped:
                    k = k.repeat_interleave(heads // kv_heads, dim=1)
                    v = v.repeat_interleave(heads // kv_heads, dim=1)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0, enable_gqa=grouped)
                out = out.transpose(1, 2).reshape(n * s, heads * dim)
            x = torch.addmm(x, out, layer.out_t)
            if layer.out_bias is not None:
                x = x + layer.out_bias
            gate, up = F.linear(_rms_norm(x, *layer.norm_mid), layer.gate_up).chunk(2, dim=-1)
            x = torch.addmm(x, F.silu(gate, inplace=True).mul_(up), layer.down_t)
        last = x.view(n, s, -1)[:, -1]
        return F.linear(_rms_norm(last, *self.norm), self.head).float()


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
    cdf = probs.cumsum(-1, dtype=torch.float64)
    u = (1.0 - torch.rand(probs.shape[0], 1, device=probs.device, dtype=torch.float64)) * cdf[:, -1:]
    picked = torch.searchsorted(cdf, u).clamp(max=probs.shape[-1] - 1)
    return (picked if order is None else order.gather(-1, picked)).squeeze(-1)


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
    n, prompt_length = input_ids.shape
    device = input_ids.device
    if max_new_tokens <= 0:
        return input_ids.new_empty(n, 0)
    with torch.inference_mode():  # no autograd bookkeeping at all: about 10 % less time per step here
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        # A prompt repeated (the G samples of a group) is prefilled once, and its cache copied to its rows.
        unique, row_of = torch.unique(
            torch.cat([input_ids, attention_mask.to(input_ids.dtype)], dim=1), dim=0, return_inverse=True
        )
        first = torch.full((len(unique),), n, dtype=torch.long, device=device)
        first = first.scatter_reduce(0, row_of, torch.arange(n, device=device), reduce="amin")
        capacity = prompt_length + max_new_tokens
        decoder = _Decoder(model, len(first), prompt_length)
        real = attention_mask.bool()
        causal = torch.ones(prompt_length, prompt_length, dtype=torch.bool, device=device).tril()
        # A padding query sees itself, so no attention row is empty (its output is never used).
        prefill_mask = (causal & real[first, None, :]) | torch.eye(
            prompt_length, dtype=torch.bool, device=device
        )
        rotary = decoder.rotary_tables(position_ids[first])
        logits = decoder(input_ids[first], rotary, 0, prefill_mask[:, None])
        decoder.select(row_of, prompt_length, capacity)
        logits = logits[row_of]
        # Every later column is a generated token, seen by the queries after it: an additive mask over the
        # prompt's padding, and the rotary tables of each row's next positions, made once.
        bias = torch.zeros(n, 1, 1, capacity, dtype=decoder.keys[0].dtype, device=device)
        bias[:, 0, 0, :prompt_length].masked_fill_(~real, float("-inf"))
        steps = torch.arange(1, max_new_tokens + 1, device=device)
        cos, sin = decoder.rotary_tables(position_ids[:, -1:] + steps)
        stops = torch.tensor(list(stop_ids), device=device)
        out = torch.full((n, max_new_tokens), pad_token_id, dtype=input_ids.dtype, device=device)
        running = None  # indices of the rows the model still runs on; None while it runs on all of them
        stopped = torch.zeros(n, dtype=torch.bool, device=device)  # of the running rows
        sequence = input_ids
        for step in range(max_new_tokens):
            scores = logits
            for processor in logits_processors or ():  # on the raw logits, before temperature (as generate)
                scores = processor(sequence, scores)
            if temperature != 1.0:
                scores = scores / temperature
            drawn = _draw(scores, top_p) if do_sample else scores.argmax(-1)
            drawn = drawn.masked_fill(stopped, pad_token_id)
            if running is None:
                out.select(1, step).copy_(drawn)
            else:
                out.select(1, step).index_copy_(0, running, drawn)
            stopped |= torch.isin(drawn, stops)
            count = int(stopped.sum())
            if count == len(stopped) or step == max_new_tokens - 1:
                break
            if logits_processors:  # they keep state for the whole batch: no row leaves it
                sequence = torch.cat([sequence, drawn[:, None]], dim=1)
            elif 4 * count >= len(stopped):  # a quarter has stopped: drop them
                keep = ~stopped
                running = keep.nonzero().squeeze(1) if running is None else running[keep]
                drawn, stopped, bias, cos, sin = drawn[keep], stopped[keep], bias[keep], cos[keep], sin[keep]
                decoder.select(keep, prompt_length + step, capacity)
            column = prompt_length + step  # where the token just drawn goes
            rotary = (cos.narrow(1, step, 1), sin.narrow(1, step, 1))
            logits = decoder(drawn[:, None], rotary, column, bias.narrow(3, 0, column + 1))
        tokens = out[:, : step + 1]
    return tokens.clone()  # a normal tensor again, which training may use as input
