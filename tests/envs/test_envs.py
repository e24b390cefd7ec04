"""The environment protocol, its resolver, and the calculator environment on scripted turns."""

from __future__ import annotations

import pytest

from tether import TetherError
from tether.envs import CalculatorEnv, Environment, checked_step, resolve_env, run_episode

PROMPT = "what is 17 + 25?"


def scripted(*turns: str):
    """A policy that plays ``turns`` in order, recording the conversation it saw each time."""
    seen: list[list[dict]] = []

    def act(messages: list[dict]) -> str:
        seen.append(messages)
        return turns[len(seen) - 1]

    act.seen = seen
    return act


def test_tool_turn_then_final_answer() -> None:
    env = CalculatorEnv(max_turns=4)
    assert isinstance(env, Environment)
    first = env.reset(PROMPT)
    assert first.startswith(PROMPT + "\n") and "<calc>" in first
    assert env.step("let me check <calc>17 + 25</calc>") == ("42", 0.0, False)
    assert env.step("17 + 25 = 42") == (None, 1.0, True)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("again")


def test_wrong_final_answer_scores_zero_and_tool_errors_come_back_as_messages() -> None:
    env = CalculatorEnv(instructions="")
    assert env.reset(PROMPT) == PROMPT
    assert env.step("<calc>17 + </calc>") == ("error: unexpected end of expression", 0.0, False)
    assert env.step("<calc>__import__('os')</calc>") == ("error: unexpected character '_'", 0.0, False)
    assert env.step("17 + 25 = 41") == (None, 0.0, True)


def test_turn_limit_ends_the_episode_and_scores_the_last_turn() -> None:
    # max_turns = 2: the 2nd turn ends the episode even though it calls the tool; it is scored as an
    # answer (it holds "= 42", so the gold reward is 1).
    env = CalculatorEnv(max_turns=2)
    env.reset(PROMPT)
    assert env.step("<calc>17+25</calc>") == ("42", 0.0, False)
    assert env.step("17 + 25 = 42 <calc>1+1</calc>") == (None, 1.0, True)
    env.reset("what is 3 + 4?")  # reset starts a new episode
    assert env.step("3 + 4 = 7") == (None, 1.0, True)
    with pytest.raises(ValueError, match="max_turns"):
        CalculatorEnv(max_turns=0)


def test_step_before_reset_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before reset"):
        CalculatorEnv().step("hello")


def test_run_episode_builds_the_conversation() -> None:
    act = scripted("<calc>12*7</calc>", "<calc>84+1</calc>", "so 12 + 73 = 85")
    episode = run_episode(CalculatorEnv(), [{"role": "user", "content": "add 12 and 73."}], act)
    assert episode.done and episode.turns == 3 and episode.reward == 1.0
    assert episode.rewards == [0.0, 0.0, 1.0]
    roles = [m["role"] for m in episode.messages]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert [m["content"] for m in episode.messages if m["role"] == "tool"] == ["84", "85"]
    assert episode.messages[0]["content"].startswith("add 12 and 73.")  # a chat prompt's last user message
    assert len(act.seen[2]) == 5  # the policy saw user, assistant, tool, assistant, tool


def test_run_episode_guards_against_an_environment_that_never_ends() -> None:
    class Forever:
        def reset(self, prompt):
            return prompt

        def step(self, action_text):
            return "again", 0.5, False

    episode = run_episode(Forever(), "p", lambda messages: "a", max_turns=3)
    assert not episode.done and episode.turns == 3 and episode.reward == 1.5


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (("obs", 1.0), "step must return (observation, reward, done)"),
        ([None, 1.0, True], "step must return (observation, reward, done)"),
        ((3, 1.0, True), "observation must be a string or None, got int"),
        ((None, "1", True), "reward must be a finite number, got '1'"),
        ((None, float("nan"), True), "reward must be a finite number, got nan"),
        ((None, True, True), "reward must be a finite number, got True"),
        ((None, 1.0, 1), "done must be a bool, got int"),
    ],
)
def test_malformed_step_results_are_one_line_errors(result, message) -> None:
    with pytest.raises(TetherError, match="environment 'mine'") as err:
        checked_step("mine", result)
    assert message in str(err.value)
    assert checked_step("mine", ("ok", 1, False)) == ("ok", 1.0, False)


def test_resolve_builtin_and_module_class(tmp_path, monkeypatch) -> None:
    make = resolve_env("calculator", seed=3)
    first, second = make(), make()
    assert isinstance(first, CalculatorEnv) and first is not second and first.task.seed == 3

    (tmp_path / "my_envs.py").write_text(
        "class Echo:\n"
        "    def reset(self, prompt):\n        return prompt\n"
        "    def step(self, action_text):\n        return None, float(len(action_text)), True\n"
        "class NeedsArgs:\n"
        "    def __init__(self, size):\n        pass\n"
        "    def reset(self, prompt):\n        return prompt\n"
        "    def step(self, action_text):\n        return None, 0.0, True\n"
        "class NoStep:\n"
        "    def reset(self, prompt):\n        return prompt\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    episode = run_episode(resolve_env("my_envs:Echo")(), "hi", lambda messages: "four")
    assert episode.reward == 4.0 and episode.done

    with pytest.raises(TetherError, match=r"environment 'my_envs:NeedsArgs': NeedsArgs\(size\) must be"):
        resolve_env("my_envs:NeedsArgs")
    with pytest.raises(TetherError, match="environment 'my_envs:NoStep': NoStep has no step method"):
        resolve_env("my_envs:NoStep")
    with pytest.raises(TetherError, match="environment 'my_envs:Missing': cannot import"):
        resolve_env("my_envs:Missing")
    with pytest.raises(TetherError, match="environment 'no_such_module:Env': cannot import"):
        resolve_env("no_such_module:Env")
    with pytest.raises(TetherError, match="unknown environment 'calculater'; did you mean 'calculator'"):
        resolve_env("calculater")
