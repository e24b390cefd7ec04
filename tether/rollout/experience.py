"""The batch an online step learns from, and how it is sampled.

Letters: N rows (B prompts × G samples each, the G samples of a prompt adjacent), P prompt tokens (left
padded), A response tokens (right padded), T = P + A.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tether.data.packing import share_prefixes
from tether.data.templates import render_prompt
from tether.ops.logprobs import IGNORE_INDEX
from tether.rollout.generate import sample_responses, stop_token_ids


@dataclass
class Experience:
    """One rollout batch. Tensors are filled in the order of the algorithm: sample → score → reference →
    value → shaped reward → advantages."""

    prompts: list[Any]  # N prompts (each repeated G times)
    completions: list[str]  # N decoded responses
    sequences: torch.Tensor  # (N, T) prompt (left-padded) followed by response (right-padded)
    attention_mask: torch.Tensor  # (N, T) 1 on real prompt and response tokens
    response_mask: torch.Tensor  # (N, A) 1 = real response token (the stop token included)
    finished: torch.Tensor  # (N,) bool: the response ended with a stop token (else it hit max_new_tokens)
    old_logprobs: torch.Tensor  # (N, A) log π_old(a_t|s_t) of the sampling policy, at temperature
    rollout_logprobs: torch.Tensor | None = None  # (N, A) the sampler's own log-probs (another engine's)
    ref_logprobs: torch.Tensor | None = None  # (N, A) log π_ref(a_t|s_t)
    values: torch.Tensor | None = None  # (N, A) V(s_t) of the value head, before each response token
    raw_scores: torch.Tensor | None = None  # (N,) the scorer's own score of each whole response
    scores: torch.Tensor | None = (
        None  # (N,) the reward of each whole response: raw, less the unfinished penalty
    )
    rewards: torch.Tensor | None = None  # (N, A) shaped per-token reward: score at the end − β·KL_t
    advantages: torch.Tensor | None = None  # (N, A) Â_t
    returns: torch.Tensor | None = None  # (N, A) targets of the value head
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    # shared_layout's, by capacity; valid because sequences and masks never change after sampling
    layouts: dict[int, dict] = field(default_factory=dict, repr=False)

    @property
    def prompt_length(self) -> int:
        return self.sequences.shape[1] - self.response_mask.shape[1]

    def labels(self) -> torch.Tensor:
        """(N, T) labels for ``token_logprobs``: response tokens, −100 on prompt and padding."""
        labels = torch.full_like(self.sequences, IGNORE_INDEX)
        labels[:, self.prompt_length :] = torch.where(
            self.response_mask.bool(),
            self.sequences[:, self.prompt_length :],
            torch.full_like(self.response_mask, IGNORE_INDEX),
        )
        return labels

    def position_ids(self) -> torch.Tensor:
        """(N, T) positions counted over real tokens (left padding does not shift them), as in generation."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def shared_layout(self, capacity: int = 0) -> dict[str, torch.Tensor]:
        """The rows as a shared-prefix layout (``data.packing.share_prefixes``): each prompt once per
        group of G samples, no left or right padding (only at the ends of the layout's rows). Its
        ``index`` is (N, T) in this batch's columns, so ``unshare(outputs, index)`` gives (N, T) outputs aligned as ``token_logprobs`` aligns them.
        Computed once per capacity (the policy, reference and value forwards share it)."""
        if capacity in self.layouts:
            return self.layouts[capacity]
        real = self.attention_mask.bool()
        labels = self.labels()
        layout = share_prefixes(
            [row[keep].tolist() for row, keep in zip(self.sequences, real)],
            [row[keep].tolist() for row, keep in zip(labels, real)],
            pad_token_id=0,
            capacity=capacity,
        )
        # Token j of row n's real tokens sits at the j-th real column of row n (after the left padding).
        rows, columns = real.nonzero(as_tuple=True)
        j = (real.long().cumsum(-1) - 1)[rows, columns]
        index = torch.full(real.shape, layout["input_ids"].numel(), dtype=torch.long)
        index[rows, columns] = layout["index"][rows, j]
        layout["index"] = index
        self.layouts[capacity] = layout
        return layout

    def response_columns(self, per_position: torch.Tensor) -> torch.Tensor:
        """(N, T) values aligned as ``token_logprobs`` aligns them (column t scores token t+1) → (N, A)."""
        start = self.prompt_length - 1
        return per_position[:, start : start + self.response_mask.shape[1]]

    def select(self, rows: torch.Tensor) -> Experience:
        """The rows ``rows`` of every tensor (a minibatch); the batch itself when ``rows`` is all of
        them in order (so what it caches, such as its shared layout, is computed once). A field set on
        that minibatch is then set on the batch: the online loop sets only ``old_logprobs``, and only
        when it was unknown, with π_old's log-probs for every row (see ``online.minibatch_loss``)."""
        n = self.sequences.shape[0]
        if len(rows) == n and torch.equal(rows, torch.arange(n, device=rows.device)):
            return self
        picked = {}
        for name, value in self.__dict__.items():
            if value is None:
                picked[name] = None
            elif isinstance(value, torch.Tensor):
                picked[name] = value[rows]
            elif name == "extras":
                picked[name] = {k: v[rows] for k, v in value.items()}
            elif name == "layouts":
                picked[name] = {}
            else:
                index = rows.tolist()
                picked[name] = [value[i] for i in index]
        return Experience(**picked)


RESPONSE_FIELDS = (
    "response_mask",
    "old_logprobs",
    "ref_logprobs",
    "values",
    "rewards",
    "advantages",
    "returns",
)
ROW_FIELDS = ("finished", "raw_scores", "scores")


def concat(batches: list[Experience], pad_token_id: int = 0) -> Experience:
    """One Experience of several batches' rows (e.g. DAPO's refill rounds): prompts re-padded on the left
    to the longest prompt, responses on the right to the longest response. Every row keeps its tokens,
    masks and per-token values; new padding is masked (0 in masks and per-token values)."""
    if len(batches) == 1:
        return batches[0]
    prompt_width = max(b.prompt_length for b in batches)
    response_width = max(b.response_mask.shape[1] for b in batches)

    def right(t: torch.Tensor, value: float = 0) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, response_width - t.shape[1]), value=value)

    def rows_of(b: Experience, tensor: torch.Tensor, value: float) -> torch.Tensor:
        prompt, response = tensor[:, : b.prompt_length], tensor[:, b.prompt_length :]
        prompt = torch.nn.functional.pad(prompt, (prompt_width - prompt.shape[1], 0), value=value)
        return torch.cat([prompt, right(response, value)], dim=1)

    fields: dict[str, Any] = {
        "prompts": [p for b in batches for p in b.prompts],
        "completions": [c for b in batches for c in b.completions],
        "sequences": torch.cat([rows_of(b, b.sequences, pad_token_id) for b in batches]),
        "attention_mask": torch.cat([rows_of(b, b.attention_mask, 0) for b in batches]),
    }
    for name in RESPONSE_FIELDS + ROW_FIELDS:
        values = [getattr(b, name) for b in batches]
        if any(v is None for v in values):
            fields[name] = None
        else:
            fields[name] = torch.cat([right(v) if name in RESPONSE_FIELDS else v for v in values])
    fields["extras"] = {
        key: torch.cat([right(b.extras[key]) if b.extras[key].dim() == 2 else b.extras[key] for b in batches])
        for key in batches[0].extras
    }
    return Experience(**fields)


@torch.no_grad()
def sample(
    policy: Any,
    tokenizer: Any,
    prompts: list[Any],
    group_size: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    logits_processors: Callable[[torch.Tensor], list] | None = None,
    backend: Any = None,
) -> Experience:
    """Sample G responses per prompt with the KV cache; return the Experience without log-probs yet.

    ``logits_processors(prompt_attention_mask)`` may return ``transformers`` logits processors for this
    batch (e.g. the Nash-MD opponent's geometric mixture, ``rollout/mixture.py``). ``backend``: another
    generator of response token ids (``rollout/vllm_backend.py``); the batch is assembled the same way."""
    repeated = [p for p in prompts for _ in range(group_size)]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:  # each prompt rendered and tokenized once, then its rows repeated G times
        batch = tokenizer(
            [render_prompt(tokenizer, p) for p in prompts],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
    finally:
        tokenizer.padding_side = side
    device = next(policy.parameters()).device  # the tokenizer's tensors are on the CPU
    batch = {
        key: batch[key].repeat_interleave(group_size, dim=0).to(device)
        for key in ("input_ids", "attention_mask")
    }
    stops = stop_token_ids(policy, tokenizer)
    if backend is not None:
        if logits_processors is not None:
            raise ValueError("a generation backend cannot apply transformers logits processors")
        prompt_ids = [
            row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])
        ]
        generated = [
            ids[:max_new_tokens]
            for ids in backend.generate(prompt_ids, max_new_tokens, temperature, top_p, stops)
        ]
        width = max(1, max(len(ids) for ids in generated))
        # The engine's log-prob of each token it sampled, where it reports them (NaN where it does not).
        reported = getattr(backend, "last_logprobs", None) or [[] for _ in generated]
        rollout_logprobs = torch.tensor(
            [(lps + [math.nan] * width)[:width] for lps in reported], dtype=torch.float32, device=device
        )
        responses = torch.tensor(
            [ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in generated], device=device
        )
        valid = torch.tensor(
            [[1] * len(ids) + [0] * (width - len(ids)) for ids in generated], device=device
        ).bool()
    else:
        processors = logits_processors(batch["attention_mask"]) if logits_processors else None
        was_training = policy.training
        policy.eval()
        responses = sample_responses(
            policy,
            batch["input_ids"],
            batch["attention_mask"],
            max_new_tokens,
            stops,
            tokenizer.pad_token_id,
            temperature=temperature,
            top_p=top_p,
            logits_processors=processors,
        )
        policy.train(was_training)
        valid = None  # both pad only after a stop token
        rollout_logprobs = None
    experience = assemble(repeated, batch, responses, stops, tokenizer, valid)
    if rollout_logprobs is not None and getattr(backend, "last_logprobs", None):
        real = experience.response_mask.bool()
        experience.rollout_logprobs = torch.where(real, rollout_logprobs, torch.zeros_like(rollout_logprobs))
    return experience


def assemble(
    prompts: list[Any],
    batch: dict[str, torch.Tensor],
    responses: torch.Tensor,
    stops: list[int],
    tokenizer: Any,
    valid: torch.Tensor | None = None,
) -> Experience:
    """The Experience of left-padded prompts ``batch`` and their sampled ``responses`` (N, A): everything
    after a response's first stop token becomes padding; ``valid`` (N, A) marks generated tokens where the
    padding of a response that did not stop could be mistaken for tokens."""
    is_stop = torch.isin(responses, torch.tensor(stops, device=responses.device))
    if valid is not None:
        is_stop &= valid
    before_stop = (is_stop.long().cumsum(-1) - is_stop.long()) == 0  # up to and including the first stop
    if valid is not None:
        before_stop &= valid
    response_mask = before_stop.long()
    finished = is_stop.any(-1)
    attention_mask = torch.cat([batch["attention_mask"], response_mask], dim=1)
    sequences = torch.cat(
        [batch["input_ids"], torch.where(before_stop, responses, tokenizer.pad_token_id)], dim=1
    )
    completions = [
        tokenizer.decode(row[mask.bool()], skip_special_tokens=True).strip()
        for row, mask in zip(responses, response_mask)
    ]
    return Experience(
        prompts=prompts,
        completions=completions,
        sequences=sequences,
        attention_mask=attention_mask,
        response_mask=response_mask,
        finished=finished,
        old_logprobs=torch.zeros(response_mask.shape, device=response_mask.device),
    )
