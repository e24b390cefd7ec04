"""Verifiable rewards: rules that check a response instead of a learned judge (RL with verifiable rewards).

Each reward is a batched function ``fn(prompts, completions, *, answers=None, lengths=None, **options)
-> list[float]``, one value per completion; it declares only the context it reads (``answers``: the
reference answer of each row; ``lengths``: each response's length in tokens — whitespace-separated words
stand in when not given). The ones that need neither are plain ``module:function`` rewards as well, e.g.
``reward=tether.rewards.verifiable:format_reward``.

- ``exact_match``: 1 when the answer extracted from the response equals the reference, else 0;
- ``format_reward``: 1 when the response has the asked-for shape, else 0;
- ``length_penalty``: −|y| / L, a plain linear cost of length (capped at −1);
- ``overlong_penalty``: DAPO's soft overlong punishment (Yu et al. 2025, eq. 13);
- ``repetition_penalty``: −(share of the response's word n-grams that repeat an earlier one).

Answer extraction (``extract_answer``): the last number, the text after GSM8K's ``#### ``, or the
content of the last ``<answer>…</answer>`` tag; ``auto`` tries them in that order of preference: tag,
``####``, last number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

EXTRACT_MODES = ("auto", "last_number", "hashes", "tag")
FORMAT_STYLES = ("answer_tag", "think_answer", "hashes", "equation")

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_EQUATION = re.compile(r"=\s*-?\d+")


def prompt_text(prompt: Any) -> str:
    """The text of a prompt: a string as is; a list of chat messages → the last user message's content."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        for message in reversed(prompt):
            if isinstance(message, dict) and message.get("role") == "user":
                return str(message.get("content", ""))
    return str(prompt)


def last_number(text: str) -> str | None:
    """The last number written in ``text`` (``-3``, ``2.5``, ``1,000``), as written; None if there is none."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def extract_answer(text: str, mode: str = "auto", tag: str = "answer") -> str | None:
    """The answer a response gives, by ``mode``:

    - ``last_number``: the last number in the text;
    - ``hashes``: the rest of the line after the last ``####`` (GSM8K's final-answer mark);
    - ``tag``: the content of the last ``<TAG>…</TAG>`` (``tag`` = ``answer`` by default);
    - ``auto``: ``tag`` if the text has one, else ``hashes``, else ``last_number``.

    Returns the stripped text, or None when the response gives no answer of that kind.
    """
    if mode not in EXTRACT_MODES:
        raise ValueError(f"unknown answer extraction {mode!r}; choose one of {', '.join(EXTRACT_MODES)}")
    if mode in ("tag", "auto"):
        found = re.findall(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, flags=re.DOTALL)
        if found:
            return found[-1].strip()
        if mode == "tag":
            return None
    if mode in ("hashes", "auto"):
        found = _HASHES.findall(text)
        if found:
            return found[-1].strip()
        if mode == "hashes":
            return None
    return last_number(text)


def _as_number(text: str) -> Decimal | None:
    """``text`` as an exact decimal when it is one number (``$1,000.`` → 1000), else None."""
    cleaned = text.strip().strip("$").rstrip(".").replace(",", "")
    if not re.fullmatch(r"-?(?:\d+(?:\.\d+)?|\.\d+)", cleaned):
        return None
    try:
        return Decimal(cleaned)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        return None


def normalize_answer(text: str) -> str:
    """A canonical form for comparing answers: a number by its value (``42.0``, ``42.``, ``$42`` → ``42``;
    ``1,000`` → ``1000``), any other text trimmed, case-folded and with runs of whitespace collapsed."""
    number = _as_number(text)
    if number is not None:
        return "0" if number == 0 else format(number.normalize(), "f")
    return " ".join(text.split()).casefold()


def reference_answer(answer: Any) -> str | None:
    """A reference answer as a string: numbers as written, a GSM8K solution (``… #### 72``) → ``72``."""
    if answer is None:
        return None
    text = str(answer)
    marked = _HASHES.findall(text)
    return marked[-1].strip() if marked else text.strip()


def answers_match(predicted: str | None, reference: str) -> bool:
    """Whether an extracted answer equals the reference. A numeric reference compares by value with the
    last number of the prediction (so ``$18`` and ``18 dollars`` match ``18``); any other reference
    compares normalised strings (``normalize_answer``)."""
    if predicted is None:
        return False
    if _as_number(reference) is not None:
        number = last_number(predicted)
        return number is not None and normalize_answer(number) == normalize_answer(reference)
    return normalize_answer(predicted) == normalize_answer(reference)


def _rows(completions: Sequence[str], values: Sequence[Any] | None, what: str) -> Sequence[Any]:
    if values is None:
        return [None] * len(completions)
    if len(values) != len(completions):
        raise ValueError(f"{len(values)} {what} for {len(completions)} completions")
    return values


def exact_match(
    prompts: Sequence[Any],
    completions: Sequence[str],
    answers: Sequence[Any] | None = None,
    extract: str = "auto",
    tag: str = "answer",
) -> list[float]:
    """Answer accuracy, the outcome reward of RL with verifiable rewards (e.g. Lambert et al. 2024, Tülu 3
    §6 "RLVR": reward 1 when the final answer is correct, else 0): 1.0 when ``extract_answer(completion,
    extract, tag)`` matches the row's reference answer (``answers_match``), 0.0 otherwise.

    ``answers``: one reference per row (a GSM8K solution ``… #### 72`` counts as ``72``). A row without a
    reference is an error, so a misconfigured source cannot pass as zero reward.
    """
    if extract not in EXTRACT_MODES:
        raise ValueError(f"unknown answer extraction {extract!r}; choose one of {', '.join(EXTRACT_MODES)}")
    if answers is None:
        if not completions:
            return []
        raise ValueError(
            "exact_match needs reference answers: pass answers=, or name a source such as "
            "exact_match[answers=gym:arithmetic]"
        )
    scores = []
    for prompt, completion, answer in zip(prompts, completions, _rows(completions, answers, "answers")):
        reference = reference_answer(answer)
        if reference is None:
            raise ValueError(f"exact_match: no reference answer for prompt {prompt_text(prompt)[:60]!r}")
        predicted = extract_answer(completion, extract, tag)
        scores.append(float(answers_match(predicted, reference)))
    return scores


def has_format(text: str, style: str = "answer_tag") -> bool:
    """Whether ``text`` has the shape ``style`` asks for:

    - ``answer_tag``: exactly one non-empty ``<answer>…</answer>``;
    - ``think_answer``: ``<think>…</think>`` then ``<answer>…</answer>`` and nothing else around them (the
      format reward of DeepSeek-R1, Guo et al. 2025, §2.2.2);
    - ``hashes``: a line ``#### N`` ending in a number (GSM8K);
    - ``equation``: an ``= N`` (the arithmetic gym task's answer shape).
    """
    if style not in FORMAT_STYLES:
        raise ValueError(f"unknown format style {style!r}; choose one of {', '.join(FORMAT_STYLES)}")
    if style == "answer_tag":
        found = re.findall(r"<answer>(.*?)</answer>", text, flags=re.DOTALL)
        return len(found) == 1 and found[0].strip() != "" and text.count("<answer>") == 1
    if style == "think_answer":
        shaped = re.fullmatch(r"\s*<think>.*?</think>\s*<answer>(.*?)</answer>\s*", text, flags=re.DOTALL)
        return (
            shaped is not None
            and shaped.group(1).strip() != ""
            and text.count("<think>") == 1
            and text.count("<answer>") == 1
        )
    if style == "hashes":
        return any(_as_number(line) is not None for line in _HASHES.findall(text))
    return _EQUATION.search(text) is not None


def format_reward(
    prompts: Sequence[Any], completions: Sequence[str], style: str = "answer_tag"
) -> list[float]:
    """1.0 for each completion of the right shape (``has_format(completion, style)``), else 0.0."""
    if style not in FORMAT_STYLES:
        raise ValueError(f"unknown format style {style!r}; choose one of {', '.join(FORMAT_STYLES)}")
    return [float(has_format(completion, style)) for completion in completions]


def word_lengths(completions: Sequence[str]) -> list[int]:
    """Whitespace-separated words per completion: the length used when token counts are not given."""
    return [len(completion.split()) for completion in completions]


def length_penalty(
    prompts: Sequence[Any],
    completions: Sequence[str],
    lengths: Sequence[int] | None = None,
    max_length: int = 256,
) -> list[float]:
    """A linear cost of length, −min(|y|, L) / L with L = ``max_length``: 0 for an empty response, −1 at
    L and beyond. Give it a small weight to prefer the shorter of two equally correct answers."""
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    lengths = word_lengths(completions) if lengths is None else _rows(completions, lengths, "lengths")
    return [-min(int(n), max_length) / max_length for n in lengths]


def soft_overlong_punishment(length: int, max_length: int, cache: int) -> float:
    """DAPO's soft overlong punishment (Yu et al. 2025, "DAPO: an open-source LLM reinforcement learning
    system at scale", §3.4, eq. 13), with L_max = ``max_length`` and L_cache = ``cache``:

        R_length(y) = 0                                  if |y| ≤ L_max − L_cache
                    = ((L_max − L_cache) − |y|) / L_cache  if L_max − L_cache < |y| ≤ L_max
                    = −1                                 if |y| > L_max

    The penalty grows linearly from 0 to −1 across the last L_cache tokens before L_max.
    """
    if not 0 < cache <= max_length:
        raise ValueError(f"need 0 < cache ≤ max_length, got cache={cache}, max_length={max_length}")
    if length <= max_length - cache:
        return 0.0
    if length <= max_length:
        return (max_length - cache - length) / cache
    return -1.0


def overlong_penalty(
    prompts: Sequence[Any],
    completions: Sequence[str],
    lengths: Sequence[int] | None = None,
    max_length: int = 256,
    cache: int = 64,
) -> list[float]:
    """``soft_overlong_punishment`` of each completion's length (tokens when ``lengths`` is given; set
    ``max_length`` to the sampler's ``max_new_tokens``)."""
    soft_overlong_punishment(0, max_length, cache)  # check the options even on an empty batch
    lengths = word_lengths(completions) if lengths is None else _rows(completions, lengths, "lengths")
    return [soft_overlong_punishment(int(n), max_length, cache) for n in lengths]


def repeated_ngram_fraction(text: str, n: int = 3) -> float:
    """The share of the word n-grams of ``text`` that repeat an n-gram seen earlier in it:
    1 − (distinct n-grams) / (all n-grams); 0 when the text has fewer than n words."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def repetition_penalty(prompts: Sequence[Any], completions: Sequence[str], n: int = 3) -> list[float]:
    """−``repeated_ngram_fraction(completion, n)``: 0 for a response that never repeats a word n-gram,
    towards −1 for one that loops."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return [-repeated_ngram_fraction(completion, n) for completion in completions]
