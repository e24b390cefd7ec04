"""Environments for multi-turn rollouts: the ``Environment`` protocol (``base``), a resolver and the
built-in ones, by name.

``resolve_env(spec)`` takes a built-in name (``calculator``) or ``module:Class`` (any class with
``reset(prompt) -> str`` and ``step(action_text) -> (observation, reward, done)``, built with no
arguments) and returns a factory that makes one fresh environment per episode; the online loop uses it
for ``env=…`` (``rollout/multiturn.py: sample_episodes``).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from tether import TetherError
from tether.envs.base import Environment, Episode, checked_step, run_episode
from tether.envs.calculator import CalculatorEnv, calculate

ENVS: dict[str, Callable[..., Any]] = {"calculator": CalculatorEnv}


def resolve_env(spec: str, seed: int = 0, max_turns: int | None = None) -> Callable[[], Environment]:
    """A factory of environments from ``spec``: a built-in name (built with ``seed``) or ``module:Class``
    (built with no arguments). Errors name the spec: an unknown name, an import failure, a class without
    ``reset``/``step``, or one whose constructor needs arguments."""
    if ":" not in spec:
        if spec not in ENVS:
            close = difflib.get_close_matches(spec, ENVS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise TetherError(
                f"unknown environment '{spec}'{hint} (built-in: {', '.join(sorted(ENVS))}; "
                "or give module:Class)"
            )
        # A built-in's own turn limit follows the rollout's, so it scores the last turn the loop allows.
        return (
            partial(ENVS[spec], seed=seed)
            if max_turns is None
            else partial(ENVS[spec], seed=seed, max_turns=max_turns)
        )
    module_name, _, attribute = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as err:
        raise TetherError(f"environment '{spec}': cannot import: {err}") from None
    missing = [method for method in ("reset", "step") if not callable(getattr(cls, method, None))]
    if missing or not callable(cls):
        what = f"has no {' or '.join(missing)} method" if missing else "is not callable"
        raise TetherError(
            f"environment '{spec}': {attribute} {what}; an environment has reset(prompt) -> str and "
            "step(action_text) -> (observation, reward, done)"
        )
    try:
        inspect.signature(cls).bind()
    except TypeError:
        raise TetherError(
            f"environment '{spec}': {attribute}{inspect.signature(cls)} must be constructible with no arguments"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): find out when it is called
        pass
    return cls


__all__ = [
    "ENVS",
    "CalculatorEnv",
    "Environment",
    "Episode",
    "calculate",
    "checked_step",
    "resolve_env",
    "run_episode",
]
