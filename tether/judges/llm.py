"""LLM judges (RLAIF): a language model reads a principle and answers by the log-probabilities it gives
the answer options — never by parsing text it generated.

- ``PairwiseLLMJudge``: the multiple-choice prompt of Constitutional AI (Bai et al. 2022, §4.1) —
  P(A) ∝ π_judge(" (A)" | prompt), normalised over the two options. Each pair is judged in both orders
  and the two probabilities that the first response wins are averaged, which cancels a constant
  position bias (Zheng et al. 2023, "Judging LLM-as-a-Judge", §3.4 "swap positions").
- ``PointwiseLLMJudge``: a 1–10 rating; the score is the expected rating under the judge's normalised
  probabilities of " 1/10" … " 10/10" (the probability-weighted score of G-Eval, Liu et al. 2023, §2.3).

Both take a constitution (``constitution.py``): every principle averaged, or one sampled per judgement.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tether import TetherError
from tether.data.templates import render
from tether.judges.constitution import Constitution
from tether.judges.templates import (
    PAIRWISE_OPTIONS,
    RATING_SCALE,
    pairwise_prompt,
    pointwise_prompt,
    rating_options,
    special_token_strings,
)


@torch.no_grad()
def option_logprobs(
    model: Any, tokenizer: Any, texts: Sequence[str], options: Sequence[str], batch_size: int = 8
) -> torch.Tensor:
    """(N, K): log π(option_k | text_n), summed over the option's tokens.

    Each text runs through the model once (left-padded batch, explicit position ids); its KV cache is
    then reused for every option, so K options cost one prompt forward plus K short ones.
    """
    option_ids = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
    if any(not ids for ids in option_ids):
        raise TetherError("judge: an answer option tokenises to nothing")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = torch.empty(len(texts), len(options))
    try:
        for start in range(0, len(texts), batch_size):
            encoded = [
                tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[start : start + batch_size]
            ]
            width = max(len(ids) for ids in encoded)
            ids = torch.tensor([[pad] * (width - len(x)) + x for x in encoded], device=device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in encoded], device=device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            prompt = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
            )
            first = torch.log_softmax(prompt.logits[:, -1].float(), -1)  # (B, V): the option's first token
            last_position = positions[:, -1:]
            cache = prompt.past_key_values
            can_crop = hasattr(cache, "crop")  # roll the cache back after each option instead of copying it
            for k, tokens in enumerate(option_ids):
                total = first[:, tokens[0]].clone()
                if len(tokens) > 1:
                    rows = ids.shape[0]
                    cont = torch.tensor([tokens[:-1]] * rows, device=device)
                    step = model(
                        input_ids=cont,
                        attention_mask=torch.cat([mask, torch.ones_like(cont)], dim=1),
                        position_ids=last_position + 1 + torch.arange(len(tokens) - 1, device=device),
                        past_key_values=cache if can_crop else copy.deepcopy(cache),
                        use_cache=True,
                    )
                    logps = torch.log_softmax(step.logits.float(), -1)
                    target = torch.tensor(tokens[1:], device=device)
                    total += logps.gather(-1, target.expand(rows, -1).unsqueeze(-1)).squeeze(-1).sum(-1)
                    if can_crop:
                        cache.crop(-(len(tokens) - 1))
                out[start : start + len(encoded), k] = total.cpu()
    finally:
        model.train(was_training)
    return out


def judge_text(tokenizer: Any, body: str, chat: bool) -> str:
    """The text the judge model continues: with ``chat``, the question is the user's turn and the final
    line ("The answer is:" / "Rating:") starts the assistant's turn; else the raw prompt (the lecture's)."""
    if not chat:
        return body
    question, _, answer_line = body.rpartition("\n")
    return (
        render(tokenizer, [{"role": "user", "content": question}], add_generation_prompt=True) + answer_line
    )


@dataclass
class PairwiseJudgement:
    """P(first response wins) per pair: shown first (as A), shown second (as B), and their average."""

    as_first: torch.Tensor  # (N,) P(A) when the first response is option A
    as_second: torch.Tensor  # (N,) P(B) when the first response is option B (order swapped)
    swapped: bool

    @property
    def probability(self) -> torch.Tensor:
        return (self.as_first + self.as_second) / 2 if self.swapped else self.as_first


class _LLMJudge:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        constitution: Constitution,
        field: str,
        principle_mode: str = "all",
        chat: bool = True,
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        if principle_mode not in ("all", "sample"):
            raise TetherError(f"judge: principle_mode must be 'all' or 'sample', got '{principle_mode}'")
        self.model, self.tokenizer, self.chat, self.batch_size = model, tokenizer, chat, batch_size
        self.principles = [getattr(p, field) for p in constitution.require(field)]
        self.principle_mode = principle_mode
        self.special_tokens = special_token_strings(tokenizer)
        self._rng = random.Random(seed)

    def _principles_for(self, n: int) -> list[list[str]]:
        """The principles each of ``n`` judgements averages over: all, or one sampled for each."""
        if self.principle_mode == "all":
            return [self.principles] * n
        return [[self._rng.choice(self.principles)] for _ in range(n)]

    def _option_probs(self, bodies: list[str], options: Sequence[str]) -> torch.Tensor:
        texts = [judge_text(self.tokenizer, b, self.chat) for b in bodies]
        return torch.softmax(option_logprobs(self.model, self.tokenizer, texts, options, self.batch_size), -1)


class PairwiseLLMJudge(_LLMJudge):
    """The multiple-choice judge; ``prefer`` gives P(first ≻ second), ``score`` ranks within groups."""

    pairwise = True

    def __init__(self, model: Any, tokenizer: Any, constitution: Constitution, swap: bool = True, **kw: Any):
        super().__init__(model, tokenizer, constitution, "comparison", **kw)
        self.swap = swap
        self.name = f"llm-pairwise:{constitution.name}"

    def judge(self, prompts: Sequence[Any], first: Sequence[str], second: Sequence[str]) -> PairwiseJudgement:
        chosen = self._principles_for(len(prompts))
        bodies, owner = [], []
        orders = (False, True) if self.swap else (False,)
        for swapped in orders:
            for i, (prompt, a, b) in enumerate(zip(prompts, first, second)):
                for principle in chosen[i]:
                    x, y = (b, a) if swapped else (a, b)
                    bodies.append(pairwise_prompt(prompt, x, y, principle, self.special_tokens))
                    owner.append((swapped, i))
        probs = self._option_probs(bodies, PAIRWISE_OPTIONS)
        sums = torch.zeros(2, len(prompts))
        counts = torch.zeros(2, len(prompts))
        for (swapped, i), p in zip(owner, probs):
            sums[int(swapped), i] += p[1] if swapped else p[0]  # P(the first response wins)
            counts[int(swapped), i] += 1
        mean = sums / counts.clamp(min=1)
        return PairwiseJudgement(mean[0], mean[1] if self.swap else mean[0], self.swap)

    def prefer(self, prompts: Sequence[Any], first: Sequence[str], second: Sequence[str]) -> list[float]:
        return self.judge(prompts, first, second).probability.tolist()

    def score(self, prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        return round_robin_scores(self, prompts, completions)


class PointwiseLLMJudge(_LLMJudge):
    """The 1–10 rating judge: the expected rating under the judge's option probabilities."""

    def __init__(self, model: Any, tokenizer: Any, constitution: Constitution, **kw: Any):
        super().__init__(model, tokenizer, constitution, "rating", **kw)
        self.name = f"llm-pointwise:{constitution.name}"

    def rating_probabilities(self, prompts: Sequence[Any], completions: Sequence[str]) -> torch.Tensor:
        """(N, 10): the judge's probability of each rating, averaged over the principles used."""
        chosen = self._principles_for(len(prompts))
        bodies, owner = [], []
        for i, (prompt, completion) in enumerate(zip(prompts, completions)):
            for principle in chosen[i]:
                bodies.append(pointwise_prompt(prompt, completion, principle, self.special_tokens))
                owner.append(i)
        probs = self._option_probs(bodies, rating_options())
        sums = torch.zeros(len(prompts), len(RATING_SCALE)).index_add_(0, torch.tensor(owner), probs)
        return sums / sums.sum(-1, keepdim=True)

    def score(self, prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        scale = torch.tensor(RATING_SCALE, dtype=torch.float32)
        return (self.rating_probabilities(prompts, completions) @ scale).tolist()


def prompt_groups(prompts: Sequence[Any]) -> list[range]:
    """Runs of adjacent equal prompts (the G samples of one prompt sit side by side everywhere in tether)."""
    groups, start = [], 0
    for i in range(1, len(prompts) + 1):
        if i == len(prompts) or prompts[i] != prompts[start]:
            groups.append(range(start, i))
            start = i
    return groups


def round_robin_scores(judge: Any, prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
    """Each response's mean probability of beating the other responses to its prompt (a Borda count).

    A pairwise judge has no absolute scale, so it scores a response only against its group; a lone
    response has nothing to be compared with and is an error.
    """
    pairs = []
    for group in prompt_groups(prompts):
        if len(group) < 2:
            raise TetherError(
                f"judge '{judge.name}' compares responses to the same prompt: each prompt needs at least "
                "2 responses side by side (num_samples / group_size ≥ 2)"
            )
        pairs += [(i, j) for i in group for j in group if i < j]
    wins = judge.prefer(
        [prompts[i] for i, _ in pairs], [completions[i] for i, _ in pairs], [completions[j] for _, j in pairs]
    )
    totals, counts = [0.0] * len(prompts), [0] * len(prompts)
    for (i, j), p in zip(pairs, wins):
        totals[i] += p
        totals[j] += 1 - p
        counts[i] += 1
        counts[j] += 1
    return [t / c for t, c in zip(totals, counts)]


def preference(
    judge: Any, prompts: Sequence[Any], first: Sequence[str], second: Sequence[str]
) -> list[float]:
    """P(first ≻ second) from any judge: a pairwise judge's own, else 1 / ½ / 0 by comparing scores."""
    if hasattr(judge, "prefer"):
        return judge.prefer(prompts, first, second)
    a, b = judge.score(prompts, first), judge.score(prompts, second)
    return [1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b)]
