"""The reward library: verifiable rewards by name, combined with weights, each logged on its own.

Spec (anywhere a reward or judge is asked for, e.g. ``reward=…``), in the ``name:weight,…`` form of the
DPO family's ``loss=dpo:1,nll:0.2``::

    verifiable:exact_match[answers=gym:arithmetic],format[style=equation]:0.2,overlong[max_length=64,cache=16]

Each term is ``NAME[OPTION=VALUE,…]:WEIGHT`` (options and weight optional, weight 1): NAME one of
``REWARDS`` (``exact_match``, ``format``, ``length``, ``overlong``, ``repetition``), OPTIONs the keyword
arguments of its function in ``tether.rewards.verifiable``. ``answers=gym:TASK`` takes each row's
reference answer from the gym task (``Task.reference_answer``: the arithmetic task computes the sum its
prompt asks for); without it the caller passes ``answers=`` to ``score`` (e.g. the ``answer`` field of
the prompt records, ``tether.specs.load_reference_answers``).

``resolve_reward(spec)`` (or ``combine(weights)`` from Python) gives a ``CombinedReward``: a judge whose
``score(prompts, completions)`` is Σ_k w_k r_k, and whose ``score_components`` also returns every r_k
(logged as ``reward/NAME``). Every term's values are checked (``validation.check_scores``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether import TetherError
from tether.registry import lookup, register
from tether.rewards.validation import check_reward_signature, check_scores
from tether.rewards.verifiable import (
    exact_match,
    extract_answer,
    format_reward,
    length_penalty,
    overlong_penalty,
    prompt_text,
    repetition_penalty,
    soft_overlong_punishment,
)

VERIFIABLE_PREFIX = "verifiable:"
GYM_PREFIX = "gym:"  # a gym task's spec; tether.specs uses these two as well

RewardFn = Callable[..., Sequence[float]]

REWARDS: dict[str, RewardFn] = {
    "exact_match": exact_match,
    "format": format_reward,
    "length": length_penalty,
    "overlong": overlong_penalty,
    "repetition": repetition_penalty,
}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: add ``fn(prompts, completions, *, [answers], [lengths], **options) -> list[float]`` to
    ``REWARDS`` under ``name`` (names are unique)."""
    return register(REWARDS, name, "reward", check=check_reward_signature)


def get_reward(name: str) -> RewardFn:
    """The reward registered under ``name``; an unknown name is an error naming the closest one."""
    return lookup(REWARDS, name, "reward", TetherError)


def answer_source(spec: str, seed: int = 0) -> Callable[[Any], str | None]:
    """prompt → reference answer, from a source spec: ``gym:TASK`` (the task works it out from the prompt)."""
    from tether.gym import get_task
    from tether.gym.base import Task

    if not spec.startswith(GYM_PREFIX):
        raise TetherError(f"answers='{spec}': expected gym:TASK (or leave it out and pass answers to score)")
    task = get_task(spec[len(GYM_PREFIX) :], seed=seed)
    if type(task).reference_answer is Task.reference_answer:
        raise TetherError(f"answers='{spec}': gym task '{task.name}' has no reference answers")
    return lambda prompt: task.reference_answer(prompt_text(prompt))


@dataclass
class RewardTerm:
    """One weighted term: ``weight · fn(prompts, completions, **context, **options)``, logged as ``key``."""

    key: str
    name: str
    fn: RewardFn
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)
    answers: Callable[[Any], str | None] | None = None  # a source of reference answers (answers=gym:TASK)


class CombinedReward:
    """Σ_k w_k r_k(prompts, completions) over ``terms``, with every r_k kept for logging."""

    pairwise = False

    def __init__(self, terms: Sequence[RewardTerm], name: str = "verifiable") -> None:
        if not terms:
            raise TetherError(f"reward '{name}': no terms")
        self.terms, self.name = list(terms), name
        self.last_components: dict[str, list[float]] = {}

    def score(
        self,
        prompts: Sequence[Any],
        completions: Sequence[str],
        answers: Sequence[Any] | None = None,
        lengths: Sequence[int] | None = None,
    ) -> list[float]:
        """The weighted total per completion (the ``Judge`` interface, plus the optional context)."""
        return self.score_components(prompts, completions, answers, lengths)[0]

    def score_components(
        self,
        prompts: Sequence[Any],
        completions: Sequence[str],
        answers: Sequence[Any] | None = None,
        lengths: Sequence[int] | None = None,
    ) -> tuple[list[float], dict[str, list[float]]]:
        """(total, {key: values}) per completion; ``answers``: the reference of each row for terms without
        a source of their own; ``lengths``: token counts (words when None)."""
        prompts, completions = list(prompts), list(completions)
        components: dict[str, list[float]] = {}
        for term in self.terms:
            declared = inspect.signature(term.fn).parameters
            context: dict[str, Any] = {}
            if "answers" in declared:
                context["answers"] = [term.answers(p) for p in prompts] if term.answers else answers
            if "lengths" in declared and lengths is not None:
                context["lengths"] = [int(n) for n in lengths]
            try:
                values = term.fn(prompts, completions, **context, **term.options)
            except ValueError as err:
                raise TetherError(f"reward '{self.name}', term '{term.key}': {err}") from None
            components[term.key] = check_scores(f"{VERIFIABLE_PREFIX}{term.name}", values, prompts)
        total = [
            sum(term.weight * components[term.key][row] for term in self.terms) for row in range(len(prompts))
        ]
        self.last_components = components
        return total, components

    def component_metrics(self, components: Mapping[str, Sequence[float]] | None = None) -> dict[str, float]:
        """``reward/KEY`` → mean of each term's (unweighted) values, of ``components`` or the last call."""
        components = self.last_components if components is None else components
        return {f"reward/{key}": sum(values) / len(values) for key, values in components.items() if values}


def _parse_option(fn: RewardFn, name: str, key: str, text: Any) -> Any:
    """An option's value; text is converted to the type of the function's default (strings stay strings).
    ``prompts``, ``completions`` and ``lengths`` are not options: the caller supplies them."""
    parameters = inspect.signature(fn).parameters
    allowed = [p for p in parameters if p not in ("prompts", "completions", "lengths")]
    if key not in allowed:
        raise TetherError(
            f"reward '{name}': unknown option '{key}' (options: {', '.join(allowed) or 'none'})"
        )
    if not isinstance(text, str):
        return text
    default = parameters[key].default
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if isinstance(default, (int, float)):
            return type(default)(text)
    except ValueError:
        kind = {"bool": "true or false", "int": "an integer", "float": "a number"}[type(default).__name__]
        raise TetherError(f"reward '{name}': option {key}={text!r}: expected {kind}") from None
    return text


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside ``[…]``."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


_TERM = re.compile(r"(?P<name>\w+)(?:\[(?P<options>[^\[\]]*)\])?(?::(?P<weight>[^:\[\]]+))?")


def parse_reward_spec(spec: str) -> list[tuple[str, dict[str, str], float]]:
    """``exact_match[answers=gym:arithmetic],format:0.2`` → [(name, {option: text}, weight), …]."""
    terms = []
    for part in _split_top_level(spec):
        found = _TERM.fullmatch(part)
        if found is None:
            raise TetherError(
                f"reward '{VERIFIABLE_PREFIX}{spec}': cannot read term '{part}' "
                "(expected NAME, NAME:WEIGHT or NAME[OPTION=VALUE,…]:WEIGHT)"
            )
        options: dict[str, str] = {}
        for item in filter(None, (o.strip() for o in (found["options"] or "").split(","))):
            key, equals, value = item.partition("=")
            if not equals:
                raise TetherError(f"reward '{found['name']}': option '{item}' is not OPTION=VALUE")
            options[key.strip()] = value.strip()
        try:
            weight = float(found["weight"]) if found["weight"] else 1.0
        except ValueError:
            raise TetherError(
                f"reward '{found['name']}': weight {found['weight']!r} is not a number"
            ) from None
        terms.append((found["name"], options, weight))
    return terms


def combine(
    weights: Mapping[str, float],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    name: str | None = None,
) -> CombinedReward:
    """A ``CombinedReward`` of registered rewards, e.g. ``combine({"exact_match": 1.0, "format": 0.2},
    {"exact_match": {"answers": "gym:arithmetic"}})``. ``options[name]`` are keyword arguments of that
    reward (``answers`` there is a source spec)."""
    specs = [(reward, dict((options or {}).get(reward, {})), weight) for reward, weight in weights.items()]
    label = name or VERIFIABLE_PREFIX + ",".join(f"{reward}:{weight:g}" for reward, weight in weights.items())
    return _build(specs, seed, label)


def _build(specs: Sequence[tuple[str, dict[str, Any], float]], seed: int, label: str) -> CombinedReward:
    terms: list[RewardTerm] = []
    for reward, given, weight in specs:
        fn = get_reward(reward)
        opts = {key: _parse_option(fn, reward, key, value) for key, value in given.items()}
        source = opts.pop("answers", None)
        if source is not None and not isinstance(source, str):
            raise TetherError(f"reward '{reward}': option answers must be a source such as gym:arithmetic")
        count = sum(term.name == reward for term in terms)
        terms.append(
            RewardTerm(
                key=reward if count == 0 else f"{reward}_{count + 1}",
                name=reward,
                fn=fn,
                weight=weight,
                options=opts,
                answers=answer_source(source, seed) if source else None,
            )
        )
    combined = CombinedReward(terms, label)
    combined.score_components([], [])  # a bad option value (an unknown style, …) fails now, not mid-run
    return combined


def resolve_reward(spec: str, seed: int = 0) -> CombinedReward:
    """The ``CombinedReward`` of a spec, with or without the ``verifiable:`` prefix (see the module doc)."""
    body = spec.removeprefix(VERIFIABLE_PREFIX)
    return _build(parse_reward_spec(body), seed, VERIFIABLE_PREFIX + body)


__all__ = [
    "REWARDS",
    "VERIFIABLE_PREFIX",
    "CombinedReward",
    "RewardTerm",
    "answer_source",
    "combine",
    "exact_match",
    "extract_answer",
    "format_reward",
    "get_reward",
    "length_penalty",
    "overlong_penalty",
    "parse_reward_spec",
    "register_reward",
    "repetition_penalty",
    "resolve_reward",
    "soft_overlong_punishment",
]
