"""Preference data in TRL's formats, validated with ``file:line`` errors, as canonical pairs.

- pairwise: ``{"prompt", "chosen", "rejected"}`` (strings or message lists), optional ``margin``;
  implicit prompt ``{"chosen", "rejected"}`` (conversations sharing their leading messages);
- rankings: ``{"prompt", "completions": […], "ranks": […]}`` (rank 1 best) → every ordered pair of
  different ranks (K completions → up to K(K−1)/2 pairs, ties skipped), each weighted 1/#pairs so every
  prompt counts once (InstructGPT, Ouyang et al. 2022, eq. 1);
- unpaired thumbs up/down: ``{"prompt", "completion", "label": bool}`` (KTO).

A string prompt with a string response is treated as one user turn and one assistant turn, rendered by
the chat template — exactly what the policy sees when it generates (``rollout.generate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from tether.data.formats import SFTExample, _check_messages, _describe
from tether.data.readers import DataError, Record

Message = dict[str, str]
Text = Union[str, list[Message]]  # noqa: UP007 (a runtime alias)


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: ``chosen`` ≻ ``rejected`` given ``prompt``."""

    prompt: Text
    chosen: Text
    rejected: Text
    where: str
    margin: float | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class UnpairedExample:
    """One thumbs-up (``label`` True) or thumbs-down completion."""

    prompt: Text
    completion: Text
    label: bool
    where: str


def text_or_messages(record: Record, field: str) -> Text:
    """A record's ``field`` as a string or a checked list of messages (a one-line error otherwise)."""
    value = record.data.get(field)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _check_messages(record, field, value)
    raise record.error(field, f"expected a string or a list of messages, got {_describe(value)}")


def _margin(record: Record) -> float | None:
    value = record.data.get("margin")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise record.error("margin", f"expected a number, got {_describe(value)}")
    return float(value)


def _split_implicit_prompt(record: Record, chosen: Text, rejected: Text) -> tuple[Text, Text, Text]:
    """Shared leading messages become the prompt (TRL's implicit-prompt format)."""
    if isinstance(chosen, str) or isinstance(rejected, str):
        raise record.error("prompt", "missing; an implicit prompt needs chosen and rejected as message lists")
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise record.error("prompt", "missing, and chosen and rejected share no leading messages")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def rankings_to_pairs(
    prompt: Text, completions: list[Text], ranks: list[float], where: str = "<rankings>"
) -> list[PreferencePair]:
    """Every ordered pair (better, worse) of a ranking, rank 1 best; ties give no pair.

    Pairs are listed in the order of the better completion's position, then the worse one's, and weighted
    1/#pairs so each prompt contributes the same total weight.
    """
    order = sorted(range(len(completions)), key=lambda i: (ranks[i], i))  # best first
    ordered = [
        (completions[order[a]], completions[order[b]])
        for a in range(len(order))
        for b in range(a + 1, len(order))
        if ranks[order[a]] < ranks[order[b]]
    ]
    weight = 1.0 / len(ordered) if ordered else 0.0
    return [PreferencePair(prompt, better, worse, where, weight=weight) for better, worse in ordered]


def parse_preference(record: Record) -> list[PreferencePair]:
    """The pairs a pairwise or rankings record holds."""
    data = record.data
    if "completions" in data or "ranks" in data:
        prompt = text_or_messages(record, "prompt")
        completions, ranks = data.get("completions"), data.get("ranks")
        if not isinstance(completions, list) or len(completions) < 2:
            raise record.error(
                "completions", f"expected a list of at least 2 completions, got {_describe(completions)}"
            )
        if not isinstance(ranks, list) or len(ranks) != len(completions):
            raise record.error("ranks", f"expected a list of {len(completions)} ranks (one per completion)")
        for index, rank in enumerate(ranks):
            if isinstance(rank, bool) or not isinstance(rank, (int, float)):
                raise record.error(f"ranks[{index}]", f"expected a number, got {_describe(rank)}")
        texts = [text_or_messages(Record({"c": c}, record.source, record.line), "c") for c in completions]
        # Duplicate completions with different ranks contradict each other: keep each text's best rank.
        best: dict[str, float] = {}
        for text, rank in zip(texts, ranks):
            key = str(text)
            best[key] = min(best.get(key, rank), rank)
        unique = list(dict.fromkeys(str(t) for t in texts))
        lookup = {str(t): t for t in texts}
        return rankings_to_pairs(prompt, [lookup[k] for k in unique], [best[k] for k in unique], record.where)
    if "chosen" not in data or "rejected" not in data:
        missing = "chosen" if "chosen" not in data else "rejected"
        raise record.error(
            missing, "missing (a preference record needs chosen and rejected, or completions and ranks)"
        )
    chosen, rejected = text_or_messages(record, "chosen"), text_or_messages(record, "rejected")
    prompt = text_or_messages(record, "prompt") if "prompt" in data else None
    if prompt is None:
        prompt, chosen, rejected = _split_implicit_prompt(record, chosen, rejected)
    if chosen == rejected:
        raise record.error("rejected", "identical to chosen: the pair carries no preference")
    return [PreferencePair(prompt, chosen, rejected, record.where, margin=_margin(record))]


def parse_unpaired(record: Record) -> UnpairedExample:
    """A thumbs up/down record."""
    label = record.data.get("label")
    if not isinstance(label, bool):
        raise record.error("label", f"expected true or false, got {_describe(label)}")
    return UnpairedExample(
        text_or_messages(record, "prompt"), text_or_messages(record, "completion"), label, record.where
    )


def as_messages(prompt: Text, response: Text) -> list[Message]:
    """The conversation a (prompt, response) pair stands for: strings become a user and an assistant turn."""
    head = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    tail = [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
    return head + tail


def response_example(prompt: Text, response: Text, where: str) -> SFTExample:
    """The (prompt, response) conversation as an SFT example whose loss covers the response's assistant turns."""
    head = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    tail = [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
    trained = (False,) * len(head) + tuple(m["role"] == "assistant" for m in tail)
    return SFTExample(where, messages=tuple(head + tail), trained=trained)


def load_pairs(records: list[Record]) -> list[PreferencePair]:
    pairs = [pair for record in records for pair in parse_preference(record)]
    if not pairs:
        raise DataError(f"{records[0].source if records else 'the data'}: no preference pairs (all ties?)")
    return pairs


def preference_rows(pairs: list[PreferencePair]) -> list[dict[str, Any]]:
    """Pairs as TRL-style JSONL rows."""
    rows = []
    for pair in pairs:
        row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
        if pair.margin is not None:
            row["margin"] = pair.margin
        rows.append(row)
    return rows
