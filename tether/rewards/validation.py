"""Checks on a user's reward function, so a mistake is one line naming the function, not a traceback from
deep inside the training loop: a signature that cannot take ``(prompts, completions)``, a result that is
not one number per completion, a value that is not a number, NaN or infinite."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tether import TetherError

PROMPT_PREVIEW = 60  # characters of the offending prompt shown in an error


def describe_prompt(prompt: Any, limit: int = PROMPT_PREVIEW) -> str:
    """A short, one-line quotation of a prompt (its last user message for a chat prompt) for an error."""
    from tether.rewards.verifiable import prompt_text

    text = " ".join(prompt_text(prompt).split())
    return repr(text if len(text) <= limit else text[: limit - 1].rstrip() + "…")


def check_reward_signature(fn: Callable[..., Any], name: str, batched: bool = True) -> None:
    """Raise a ``TetherError`` naming ``name`` unless ``fn`` can be called as ``fn(prompts, completions)``
    (``fn(prompt, completion)`` when not ``batched``). A callable without an inspectable signature passes."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, None)
    except TypeError:
        expected = (
            "fn(prompts, completions) -> list of numbers" if batched else "fn(prompt, completion) -> number"
        )
        raise TetherError(
            f"reward function '{name}': has signature {signature}, expected {expected}"
        ) from None


def _as_float(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bool, int, float, a NumPy scalar, a one-element
    tensor or array), else None. Strings are not numbers here, even ``"1.0"``."""
    if isinstance(value, numbers.Real):
        return float(value)
    item, numel, size = (
        getattr(value, "item", None),
        getattr(value, "numel", None),
        getattr(value, "size", None),
    )
    count = numel() if callable(numel) else size if isinstance(size, int) else None  # torch / NumPy
    if callable(item) and count == 1:
        return _as_float(item())
    return None


def check_scores(name: str, values: Any, prompts: Sequence[Any]) -> list[float]:
    """``values`` returned by the reward function ``name`` for ``prompts`` as a list of floats, or a
    ``TetherError`` naming ``name`` and what was wrong: not a list, the wrong count, a value that is not a
    number, or NaN / ±inf — then with the index and the (truncated) prompt of the first bad value."""
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):
        values = values.tolist()  # a tensor or array
    elif isinstance(values, Iterator):
        values = list(values)  # a generator
    if isinstance(values, (str, bytes, dict, set)) or not isinstance(values, Sequence):
        raise TetherError(
            f"reward function '{name}': returned a {type(values).__name__}, expected a list of "
            f"{len(prompts)} numbers (one per completion)"
        )
    if len(values) != len(prompts):
        raise TetherError(
            f"reward function '{name}': returned {len(values)} value{'s' * (len(values) != 1)} for "
            f"{len(prompts)} completion{'s' * (len(prompts) != 1)}"
        )
    scores = []
    for index, (value, prompt) in enumerate(zip(values, prompts)):
        number = _as_float(value)
        if number is None:
            raise TetherError(
                f"reward function '{name}': value {index} is {value!r:.40} ({type(value).__name__}), "
                f"not a number (prompt {describe_prompt(prompt)})"
            )
        if not math.isfinite(number):
            raise TetherError(
                f"reward function '{name}': value {index} is {number} (prompt {describe_prompt(prompt)})"
            )
        scores.append(number)
    return scores
