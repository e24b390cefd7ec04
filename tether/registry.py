"""Name → function tables (layer 0, imports nothing): the decorator that fills one and the look-up that
names the closest valid entry. ``advantages.ADVANTAGES``, ``losses.preference.PREFERENCE_LOSSES`` and
``rewards.REWARDS`` are such tables."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def register(
    table: dict[str, F], name: str, kind: str, check: Callable[[F, str], None] | None = None
) -> Callable[[F], F]:
    """Decorator: add a function to ``table`` under ``name`` (names are unique; ``kind`` names the table
    in the error), after ``check(fn, name)`` when given."""

    def decorator(fn: F) -> F:
        if name in table:
            raise ValueError(f"{kind} {name!r} is already registered")
        if check is not None:
            check(fn, name)
        table[name] = fn
        return fn

    return decorator


def lookup(table: dict[str, F], name: str, kind: str, error: type[Exception] = ValueError) -> F:
    """``table[name]``; an unknown name is ``error`` naming the closest entry and every valid one."""
    if name not in table:
        close = difflib.get_close_matches(name, table, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise error(f"unknown {kind} {name!r}{hint} (choose from {', '.join(sorted(table))})")
    return table[name]
