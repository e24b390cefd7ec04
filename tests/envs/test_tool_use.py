"""Calculator transcripts for SFT, and the episode metrics of a policy in the calculator environment."""

from __future__ import annotations

import torch

import tether.rollout.multiturn as multiturn
from tether.envs import resolve_env
from tether.envs.calculator import CalculatorEnv, tool_use_transcripts
from tether.eval.episodes import episode_metrics, well_formed_call
from tether.gym.arithmetic import ArithmeticTask


def test_transcripts_call_the_tool_and_answer_right():
    records = tool_use_transcripts("train", n=5)
    assert len(records) == 5
    for record in records:
        user, call, tool, answer = record["messages"]
        assert [m["role"] for m in record["messages"]] == ["user", "assistant", "tool", "assistant"]
        a, b = (int(x) for x in call["content"].removeprefix("<calc>").removesuffix("</calc>").split(" + "))
        assert tool["content"] == str(a + b) and answer["content"] == f"{a} + {b} = {a + b}"
        question = user["content"].split("\n")[0]
        assert ArithmeticTask.is_correct(question, answer["content"])
        # Played in the environment, the transcript's turns earn the full reward.
        env = CalculatorEnv()
        assert env.reset(question) == user["content"]
        assert env.step(call["content"]) == (tool["content"], 0.0, False)
        assert env.step(answer["content"]) == (None, 1.0, True)


def test_well_formed_calls():
    assert well_formed_call("<calc>2 + 3</calc> then")
    assert not well_formed_call("<calc>2 +</calc>")
    assert not well_formed_call("2 + 3 = 5")


def test_episode_metrics_of_a_scripted_policy(make_model, tokenizer, monkeypatch):
    # Row 0 calls the tool and answers right; row 1 answers wrong without calling.
    scripts = {0: iter(["<calc>17 + 25</calc>", "17 + 25 = 42"]), 1: iter(["3 + 4 = 8"])}

    def fake_sample(model, input_ids, attention_mask, max_new_tokens, stops, pad, **kwargs):
        rows = [0, 1] if input_ids.shape[0] == 2 else [0]  # only row 0 plays a second turn
        turns = [
            tokenizer(next(scripts[r]), add_special_tokens=False)["input_ids"] + [stops[0]] for r in rows
        ]
        width = max(len(t) for t in turns)
        return torch.tensor([t + [pad] * (width - len(t)) for t in turns])

    monkeypatch.setattr(multiturn, "sample_responses", fake_sample)
    metrics = episode_metrics(
        make_model(), tokenizer, ["what is 17 + 25?", "what is 3 + 4?"], resolve_env("calculator")
    )
    assert metrics == {"success_rate": 0.5, "reward": 0.5, "tool_call_rate": 0.5, "turns": 1.5}


def test_a_built_in_environment_takes_the_rollouts_turn_limit():
    # With the loop's limit, the calculator scores the last allowed turn instead of leaving it cut off.
    env = resolve_env("calculator", max_turns=2)()
    env.reset("what is 1 + 2?")
    assert env.step("<calc>1+2</calc>") == ("3", 0.0, False)
    assert env.step("<calc>1+2</calc> = 3")[2] is True
