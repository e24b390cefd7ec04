"""A malformed user reward function (``reward=module:function``) is a one-line error naming it: a wrong
signature, a wrong number of values, values that are not numbers, NaN or infinity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tether import TetherError
from tether.judges import FunctionJudge, import_function
from tether.rewards.validation import check_scores, describe_prompt

REWARDS_MODULE = """
import math

def good(prompts, completions):
    return [float(len(c)) for c in completions]

def with_options(prompts, completions, scale=2.0, *, answers=None):
    return [scale] * len(completions)

def one_argument(completions):
    return [1.0] * len(completions)

def three_arguments(prompts, completions, answers):
    return [1.0] * len(completions)

def too_few(prompts, completions):
    return [1.0] * (len(completions) - 1)

def scalar(prompts, completions):
    return 1.0

def words(prompts, completions):
    return ["high" if "!" in c else 1.0 for c in completions]

def numeric_strings(prompts, completions):
    return ["1.0" for c in completions]

def nones(prompts, completions):
    return [None for c in completions]

def not_a_number(prompts, completions):
    return [math.nan if "bad" in c else 0.0 for c in completions]

def infinite(prompts, completions):
    return [0.0, -math.inf]

def per_sample(prompt, completion):
    return math.inf if completion == "boom" else 1.0
"""

PROMPTS = ["what is 2 + 2?", "a very long prompt " + "that goes on and on " * 10 + "and ends here"]


@pytest.fixture
def judge(tmp_path, monkeypatch):
    (tmp_path / "user_rewards.py").write_text(REWARDS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))

    def build(name: str, batched: bool = True) -> FunctionJudge:
        spec = f"user_rewards:{name}"
        return FunctionJudge(import_function(spec), batched=batched, name=spec)

    return build


def one_line_error(call) -> str:
    with pytest.raises(TetherError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_good_functions_pass(judge) -> None:
    assert judge("good").score(PROMPTS, ["ab", "abcd"]) == [2.0, 4.0]
    assert judge("with_options").score(PROMPTS, ["a", "b"]) == [2.0, 2.0]  # extra defaults are fine
    assert judge("per_sample", batched=False).score(PROMPTS, ["x", "y"]) == [1.0, 1.0]


@pytest.mark.parametrize("name", ["one_argument", "three_arguments"])
def test_wrong_signature_fails_when_resolved(judge, name) -> None:
    message = one_line_error(lambda: judge(name))
    assert message.startswith(f"reward function 'user_rewards:{name}': has signature (")
    assert "expected fn(prompts, completions) -> list of numbers" in message


def test_wrong_signature_of_a_per_sample_function(judge) -> None:
    message = one_line_error(lambda: judge("one_argument", batched=False))
    assert "expected fn(prompt, completion) -> number" in message


def test_wrong_number_of_values(judge) -> None:
    message = one_line_error(lambda: judge("too_few").score(PROMPTS, ["a", "b"]))
    assert message == "reward function 'user_rewards:too_few': returned 1 value for 2 completions"


def test_a_scalar_instead_of_a_list(judge) -> None:
    message = one_line_error(lambda: judge("scalar").score(PROMPTS, ["a", "b"]))
    assert message == (
        "reward function 'user_rewards:scalar': returned a float, expected a list of 2 numbers (one per completion)"
    )


def test_non_numbers_name_the_first_offending_prompt(judge) -> None:
    message = one_line_error(lambda: judge("words").score(PROMPTS, ["fine", "wow!"]))
    assert message.startswith("reward function 'user_rewards:words': value 1 is 'high' (str), not a number")
    # The prompt is quoted on one line and cut to 60 characters with an ellipsis.
    assert message.endswith("(prompt 'a very long prompt that goes on and on that goes on and on…')")
    assert "not a number" in one_line_error(lambda: judge("numeric_strings").score(PROMPTS[:1], ["a"]))
    assert "value 0 is None (NoneType)" in one_line_error(lambda: judge("nones").score(PROMPTS[:1], ["a"]))


def test_nan_and_inf_name_the_prompt(judge) -> None:
    message = one_line_error(lambda: judge("not_a_number").score(PROMPTS, ["bad", "good"]))
    assert message == "reward function 'user_rewards:not_a_number': value 0 is nan (prompt 'what is 2 + 2?')"
    message = one_line_error(lambda: judge("infinite").score(PROMPTS, ["a", "b"]))
    assert message.startswith("reward function 'user_rewards:infinite': value 1 is -inf (prompt 'a very long")
    message = one_line_error(lambda: judge("per_sample", batched=False).score(PROMPTS, ["ok", "boom"]))
    assert message.startswith("reward function 'user_rewards:per_sample': value 1 is inf")


def test_numbers_of_other_kinds_are_accepted() -> None:
    prompts = ["p"] * 3
    assert check_scores("f", [True, 2, np.float32(0.5)], prompts) == [1.0, 2.0, 0.5]
    assert check_scores("f", np.array([1, 2, 3]), prompts) == [1.0, 2.0, 3.0]
    assert check_scores("f", torch.tensor([0.25, 0.5, 1.0]), prompts) == [0.25, 0.5, 1.0]
    assert check_scores("f", [torch.tensor(1.5), np.array(2.0), 3], prompts) == [1.5, 2.0, 3.0]
    assert check_scores("f", (x / 2 for x in range(3)), prompts) == [0.0, 0.5, 1.0]
    with pytest.raises(TetherError, match=r"value 0 is tensor\(\[1\., 2\.\]\) \(Tensor\), not a number"):
        check_scores("f", [torch.tensor([1.0, 2.0])], ["p"])
    with pytest.raises(TetherError, match="returned a str"):
        check_scores("f", "1.0", ["p"])


def test_describe_prompt_of_a_chat_prompt() -> None:
    chat = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "add\n1 and 2."},
    ]
    assert describe_prompt(chat) == "'add 1 and 2.'"


def test_the_cli_prints_the_error_on_one_line(judge, tmp_path, capsys) -> None:
    from tether.cli import main

    data = tmp_path / "records.jsonl"
    data.write_text(json.dumps({"prompt": "what is 2 + 2?", "completion": "bad"}) + "\n")
    assert main(["score", f"data={data}", "judge=user_rewards:not_a_number"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "tether score: error: reward function 'user_rewards:not_a_number': value 0 is nan "
        "(prompt 'what is 2 + 2?')\n"
    )
