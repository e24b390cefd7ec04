"""The environment interface of multi-turn, tool-using rollouts.

An environment is any object with two methods (a ``typing.Protocol``: no base class to inherit):

- ``reset(prompt) -> str``: start an episode for ``prompt`` (a string or a list of chat messages) and
  return the first observation, the text the policy answers;
- ``step(action_text) -> (observation, reward, done)``: take the policy's turn; ``observation`` is the
  next message shown to the policy (a tool's output; ``None`` when there is none), ``reward`` a float
  for this turn, ``done`` whether the episode is over.

One instance runs one episode at a time; a rollout of N prompts makes N instances (``resolve_env``
returns a factory). ``run_episode`` drives one with any ``act(messages) -> str``, a scripted or sampled
policy, and checks what the environment returns.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tether import TetherError


@runtime_checkable
class Environment(Protocol):
    def reset(self, prompt: Any) -> str: ...

    def step(self, action_text: str) -> tuple[str | None, float, bool]: ...


@dataclass
class Episode:
    """One finished (or cut-off) episode: the conversation, the per-turn rewards and their sum."""

    messages: list[dict[str, str]] = field(default_factory=list)  # user, then assistant / tool turns
    rewards: list[float] = field(default_factory=list)  # one per policy turn
    done: bool = False  # False when ``max_turns`` cut the episode off first

    @property
    def reward(self) -> float:
        return sum(self.rewards)

    @property
    def turns(self) -> int:
        return len(self.rewards)


def checked_step(name: str, result: Any) -> tuple[str | None, float, bool]:
    """``result`` of ``step`` as ``(observation, reward, done)``, or a ``TetherError`` naming the
    environment ``name`` and what was wrong."""
    if not isinstance(result, tuple) or len(result) != 3:
        raise TetherError(
            f"environment '{name}': step must return (observation, reward, done), got {result!r:.80}"
        )
    observation, reward, done = result
    if observation is not None and not isinstance(observation, str):
        raise TetherError(
            f"environment '{name}': step's observation must be a string or None, "
            f"got {type(observation).__name__}"
        )
    if isinstance(reward, bool) or not isinstance(reward, numbers.Real) or not math.isfinite(reward):
        raise TetherError(f"environment '{name}': step's reward must be a finite number, got {reward!r:.40}")
    if not isinstance(done, bool):
        raise TetherError(f"environment '{name}': step's done must be a bool, got {type(done).__name__}")
    return observation, float(reward), done


def run_episode(
    env: Environment, prompt: Any, act: Callable[[list[dict[str, str]]], str], max_turns: int = 32
) -> Episode:
    """Play one episode: ``act`` sees the conversation so far (``user`` first, then ``assistant`` and
    ``tool`` messages) and returns the policy's next turn. Stops when the environment says done, or after
    ``max_turns`` policy turns (a guard against an environment that never ends; ``done`` stays False)."""
    name = getattr(env, "name", type(env).__name__)
    first = env.reset(prompt)
    if not isinstance(first, str):
        raise TetherError(f"environment '{name}': reset must return a string, got {type(first).__name__}")
    episode = Episode(messages=[{"role": "user", "content": first}])
    for _ in range(max_turns):
        action = act(list(episode.messages))
        episode.messages.append({"role": "assistant", "content": action})
        observation, reward, done = checked_step(name, env.step(action))
        episode.rewards.append(reward)
        if done:
            episode.done = True
            break
        if observation is not None:
            episode.messages.append({"role": "tool", "content": observation})
    return episode
