"""Sampling from the geometric mixture π^β ∝ π^{1−β}·π_ref^β token by token — the Nash-MD opponent
(Munos et al. 2023, §7: the one-step-at-a-time regularised policy; the math is
``losses.nash.geometric_mixture_logits``).

``GeometricMixtureProcessor`` is a ``transformers`` logits processor: at each decoding step of the
policy's ``generate`` it runs the reference one token further (its own KV cache, only for the rows that
play the opponent) and replaces those rows' next-token logits by the mixture's log-probabilities. The
generation config's temperature and top-p then apply to the mixture, as they would to the policy.
With LoRA the reference is the policy with its adapters disabled for that forward.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from tether.losses.nash import geometric_mixture_logits


class GeometricMixtureProcessor:
    """Mix the reference into the rows ``rows`` of a batch being generated (see the module docstring)."""

    def __init__(
        self,
        reference: Any,
        mixture_coef: float,
        rows: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        adapters_off: bool = False,
    ) -> None:
        self.reference, self.mixture_coef = reference, mixture_coef
        self.rows = rows.nonzero().flatten()  # (M,) rows of the batch that sample from the mixture
        self.mask = prompt_attention_mask[self.rows]  # (M, T) grows by one column per step
        self.adapters_off = adapters_off
        self.cache: Any = None
        self.seen = 0  # how many columns of input_ids the reference has read

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if len(self.rows) == 0 or self.mixture_coef == 0.0:
            return scores
        ids = input_ids[self.rows]
        new = ids[:, self.seen :]  # the whole prompt at the first step, then the last sampled token
        if self.seen:
            self.mask = torch.cat([self.mask, torch.ones_like(new)], dim=1)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -new.shape[1] :]
        context = self.reference.disable_adapter() if self.adapters_off else nullcontext()
        with context:
            out = self.reference(
                input_ids=new,
                attention_mask=self.mask,
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=1,
            )
        self.cache, self.seen = out.past_key_values, ids.shape[1]
        mixed = geometric_mixture_logits(scores[self.rows], out.logits[:, -1], self.mixture_coef)
        scores = scores.clone()
        scores[self.rows] = mixed.to(scores.dtype)
        return scores
