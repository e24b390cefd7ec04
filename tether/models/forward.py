"""Log-probabilities of chosen tokens, computing logits only where a loss needs them.

The LM head (``V`` outputs) dominates a small model's cost. Instead of ``model(...).logits`` for all
(B, T) positions, run the decoder for hidden states, select the K positions whose next token carries loss,
and apply the head to those K rows only. Models whose head is more than a plain linear layer (logit
soft-capping, logit scaling) fall back to the full forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tether.ops.logprobs import IGNORE_INDEX, gather_logprobs, shift_labels


def _base_model(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _has_plain_head(model: Any) -> bool:
    config = model.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return False
    return isinstance(model.get_output_embeddings(), nn.Linear) and hasattr(model, "get_decoder")


SHARED_PREFIX_ATTENTION = ("sdpa", "eager")


def shares_prefixes(model: Any) -> bool:
    """Whether the model takes the 4-D attention masks of ``data.packing.share_prefixes`` (SDPA and eager
    attention do; FlashAttention-2 does not, nor does a recurrent LM, and they get position-id packing)."""
    base = _base_model(model)
    if getattr(base, "is_recurrent", False):
        return False
    return getattr(base.config, "_attn_implementation", "sdpa") in SHARED_PREFIX_ATTENTION


def attention_mask_for(model: Any, mask: torch.Tensor | None) -> torch.Tensor | None:
    """A 4-D boolean mask (True = may attend) as the model's attention wants it: as it is for SDPA, an
    additive bias (0 or the dtype's minimum) for eager attention. 2-D masks and None pass unchanged."""
    if mask is None or mask.dim() != 4 or mask.dtype != torch.bool:
        return mask
    base = _base_model(model)
    if getattr(base.config, "_attn_implementation", "sdpa") != "eager":
        return mask
    dtype = base.dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def token_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float = 1.0,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """log π(label[t+1] | tokens ≤ t) for every position, fp32, 0 where the next label is ignored.

    input_ids, attention_mask, labels: (B, T), labels aligned with input_ids (−100 = no loss).
    Packed rows (several sequences per row, see ``data/packing.py``) pass ``position_ids`` that restart at 0
    for each sequence and no attention mask: transformers then attends only within each sequence. A
    shared-prefix layout passes its (B, 1, T, T) boolean mask.
    Returns (B, T): column t scores token t+1; the last column is always 0.
    """
    targets = shift_labels(input_ids, labels)  # (B, T)
    selected = targets != IGNORE_INDEX  # (B, T)
    base = _base_model(model)
    attention_mask = attention_mask_for(base, attention_mask)
    if _has_plain_head(base):
        decoder = base.get_decoder()
        hidden = decoder(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        logits = base.get_output_embeddings()(hidden.last_hidden_state[selected])  # (K, V) from (B, T, D)
    else:
        output = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        logits = output.logits[selected]  # (K, V)
    picked = gather_logprobs(logits, targets[selected], temperature=temperature)  # (K,)
    out = torch.zeros(targets.shape, dtype=torch.float32, device=picked.device)
    out[selected] = picked
    return out


class TokenLogProbs(nn.Module):
    """A causal LM whose forward returns :func:`token_logprobs` — the module handed to Accelerate, so
    distributed wrappers (DDP, FSDP) see every forward that training runs."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor,
        temperature: float = 1.0,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return token_logprobs(self.model, input_ids, attention_mask, labels, temperature, position_ids)
