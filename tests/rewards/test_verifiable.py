"""The verifiable-reward library: answer extraction, each reward on hand-worked cases, the spec grammar,
combination with per-term components, and resolution by name."""

from __future__ import annotations

import json

import pytest

from tether import TetherError
from tether.rewards import (
    CombinedReward,
    combine,
    parse_reward_spec,
    register_reward,
    resolve_reward,
)
from tether.rewards.verifiable import (
    answers_match,
    exact_match,
    extract_answer,
    format_reward,
    has_format,
    length_penalty,
    normalize_answer,
    overlong_penalty,
    prompt_text,
    reference_answer,
    repeated_ngram_fraction,
    repetition_penalty,
    soft_overlong_punishment,
)
from tether.specs import load_reference_answers


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        ("17 + 25 = 42.", "last_number", "42"),
        ("first 3, then -7.5 and 1,000", "last_number", "1,000"),
        ("costs 12, not -4", "last_number", "-4"),
        ("no digits here", "last_number", None),
        ("work...\n#### 72\n", "hashes", "72"),
        ("#### 1\nwait\n####  $1,250 ", "hashes", "$1,250"),
        ("no mark 5", "hashes", None),
        ("<answer> 42 </answer>", "tag", "42"),
        ("<answer>1</answer> then <answer>\nB\n</answer>", "tag", "B"),
        ("42", "tag", None),
        # auto: tag first, then ####, then the last number
        ("#### 5 <answer>6</answer> 7", "auto", "6"),
        ("#### 5\n and 7", "auto", "5"),
        ("it is 8, or 9", "auto", "9"),
    ],
)
def test_extract_answer(text: str, mode: str, expected: str | None) -> None:
    assert extract_answer(text, mode) == expected


def test_extract_answer_custom_tag_and_bad_mode() -> None:
    assert extract_answer("<final>x = 3</final>", "tag", tag="final") == "x = 3"
    with pytest.raises(ValueError, match="unknown answer extraction"):
        extract_answer("1", "first_number")


def test_answer_normalisation_and_matching() -> None:
    assert normalize_answer(" 42.0 ") == normalize_answer("42") == normalize_answer("$42.") == "42"
    assert normalize_answer("1,000") == "1000" and normalize_answer("-0.0") == "0"
    assert normalize_answer("  New   York ") == "new york"
    assert reference_answer("Natalia sold 48 + 24 = 72 clips.\n#### 72") == "72"
    assert reference_answer(7) == "7" and reference_answer(None) is None
    assert answers_match("$18 dollars", "18") and answers_match("18.00", "18")
    assert not answers_match("180", "18") and not answers_match(None, "18")
    assert answers_match("new york", "New York") and not answers_match("York", "New York")


def test_exact_match_hand_worked() -> None:
    prompts = ["what is 17 + 25?"] * 5
    completions = ["17 + 25 = 42", "17 + 25 = 43", "<answer>42.0</answer>", "so #### 42", "forty-two"]
    assert exact_match(prompts, completions, answers=["42"] * 5) == [1.0, 0.0, 1.0, 1.0, 0.0]
    # The last number written is the 25 of "17 + 25": wrong.
    assert exact_match(["p"], ["17 + 25 = forty-two"], answers=["42"], extract="last_number") == [0.0]
    with pytest.raises(ValueError, match="needs reference answers"):
        exact_match(prompts, completions)
    with pytest.raises(ValueError, match="no reference answer for prompt 'what is 17 \\+ 25\\?'"):
        exact_match(prompts[:1], completions[:1], answers=[None])
    with pytest.raises(ValueError, match="1 answers for 2 completions"):
        exact_match(prompts[:2], completions[:2], answers=["42"])
    assert exact_match([], [], answers=None) == []


def test_format_styles() -> None:
    assert has_format("so <answer>42</answer>", "answer_tag")
    assert not has_format("<answer> </answer>", "answer_tag")
    assert not has_format("<answer>1</answer><answer>2</answer>", "answer_tag")
    assert has_format("<think>17+25</think>\n<answer>42</answer>", "think_answer")
    assert not has_format("hi <think>a</think><answer>42</answer>", "think_answer")  # text outside
    assert not has_format("<think>a</think><answer></answer>", "think_answer")
    assert has_format("steps\n#### 1,000", "hashes") and not has_format("#### many", "hashes")
    assert has_format("17 + 25 = 42", "equation") and not has_format("17 + 25 is 42", "equation")
    assert format_reward(["p", "p"], ["<answer>1</answer>", "1"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="unknown format style"):
        format_reward([], [], style="xml")


def test_length_penalties_hand_worked() -> None:
    # DAPO eq. 13 with L_max = 10, L_cache = 4: free up to 6, then (6 − |y|)/4, then −1 beyond 10.
    expected = {0: 0.0, 6: 0.0, 7: -0.25, 8: -0.5, 10: -1.0, 11: -1.0, 500: -1.0}
    for length, value in expected.items():
        assert soft_overlong_punishment(length, max_length=10, cache=4) == pytest.approx(value)
    assert overlong_penalty([], ["x"] * 4, lengths=[6, 7, 9, 12], max_length=10, cache=4) == [
        0.0,
        -0.25,
        -0.75,
        -1.0,
    ]
    # Without token counts, words stand in: 7 words → −0.25.
    assert overlong_penalty(["p"], ["a b c d e f g"], max_length=10, cache=4) == [-0.25]
    with pytest.raises(ValueError, match="cache"):
        soft_overlong_punishment(3, max_length=10, cache=11)
    # Linear length cost −min(|y|, L)/L with L = 10.
    assert length_penalty([], ["", "a b c d e", "w " * 20], max_length=10) == [0.0, -0.5, -1.0]
    assert length_penalty([], ["", ""], lengths=[3, 12], max_length=10) == [-0.3, -1.0]


def test_repetition_hand_worked() -> None:
    # "a b c a b c": trigrams abc, bca, cab, abc → 4 n-grams, 3 distinct → 1 − 3/4 = 0.25 repeated.
    assert repeated_ngram_fraction("a b c a b c", n=3) == pytest.approx(0.25)
    assert repeated_ngram_fraction("a a a a", n=1) == pytest.approx(0.75)
    assert repeated_ngram_fraction("a b", n=3) == 0.0
    assert repetition_penalty([], ["a b c a b c", "17 + 25 = 42"], n=3) == [-0.25, 0.0]


def test_prompt_text_of_chat_prompts() -> None:
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "add 1 and 2."}]
    assert prompt_text(chat) == "add 1 and 2." and prompt_text("what is 1 + 2?") == "what is 1 + 2?"


def test_spec_grammar() -> None:
    spec = (
        "exact_match[answers=gym:arithmetic],format[style=equation]:0.2, overlong[max_length=10,cache=4]:-0.5"
    )
    assert parse_reward_spec(spec) == [
        ("exact_match", {"answers": "gym:arithmetic"}, 1.0),
        ("format", {"style": "equation"}, 0.2),
        ("overlong", {"max_length": "10", "cache": "4"}, -0.5),
    ]
    for bad, message in [
        ("exact_match[", "cannot read term"),
        ("format:heavy", "weight 'heavy' is not a number"),
        ("format[style]", "option 'style' is not OPTION=VALUE"),
    ]:
        with pytest.raises(TetherError, match=message):
            parse_reward_spec(bad)


def test_combined_reward_total_and_components_on_the_arithmetic_task() -> None:
    reward = resolve_reward(
        "verifiable:exact_match[answers=gym:arithmetic],format[style=equation]:0.2,overlong[max_length=10,cache=4]"
    )
    assert isinstance(reward, CombinedReward)
    prompts = ["what is 17 + 25?", "add 3 and 4.", [{"role": "user", "content": "compute 10 + 5."}]]
    completions = ["17 + 25 = 42", "3 plus 4 is 7", "10 + 5 = 16"]
    # row 0: correct, has "= N", 5 words → 1 + 0.2 + 0 = 1.2
    # row 1: last number 7 is right, no "= N", 5 words → 1 + 0 + 0 = 1.0
    # row 2: wrong sum, has "= N", token count 8 given → 0 + 0.2 − 0.5 = −0.3
    total, components = reward.score_components(prompts, completions, lengths=[5, 5, 8])
    assert total == pytest.approx([1.2, 1.0, -0.3])
    assert components == {
        "exact_match": [1.0, 1.0, 0.0],
        "format": [1.0, 0.0, 1.0],
        "overlong": [0.0, 0.0, -0.5],
    }
    assert reward.last_components == components
    assert reward.component_metrics() == pytest.approx(
        {"reward/exact_match": 2 / 3, "reward/format": 2 / 3, "reward/overlong": -0.5 / 3}
    )
    assert reward.score(prompts, completions) == pytest.approx([1.2, 1.0, 0.2])  # words: 5, 5, 5


def test_answers_passed_by_the_caller_and_repeated_terms() -> None:
    reward = combine({"exact_match": 1.0, "repetition": 0.5}, {"repetition": {"n": 1}})
    total, components = reward.score_components(["q1", "q2"], ["#### 72", "a a"], answers=["72", "3"])
    assert components == {"exact_match": [1.0, 0.0], "repetition": [0.0, -0.5]}
    assert total == pytest.approx([1.0, -0.25])
    with pytest.raises(TetherError, match="term 'exact_match': exact_match needs reference answers"):
        reward.score(["q"], ["1"])
    twice = resolve_reward("format[style=equation],format[style=hashes]:2")
    assert twice.score_components(["p"], ["x = 1\n#### 1"])[1] == {"format": [1.0], "format_2": [1.0]}


def test_resolution_errors_name_the_term() -> None:
    cases = [
        ("verifiable:exact_mach", "unknown reward 'exact_mach'; did you mean 'exact_match'?"),
        ("verifiable:format[colour=red]", "reward 'format': unknown option 'colour' \\(options: style\\)"),
        ("verifiable:overlong[max_length=ten]", "option max_length='ten': expected an integer"),
        ("verifiable:format[style=xml]", "term 'format': unknown format style 'xml'"),
        ("verifiable:exact_match[answers=gym:reviews]", "gym task 'reviews' has no reference answers"),
        ("verifiable:exact_match[answers=data.jsonl]", "expected gym:TASK"),
        ("verifiable:format[answers=gym:arithmetic]", "unknown option 'answers'"),
    ]
    for spec, message in cases:
        with pytest.raises(TetherError, match=message):
            resolve_reward(spec)
    with pytest.raises(TetherError, match="reward 'format': unknown option 'colour'"):
        combine({"format": 1.0}, {"format": {"colour": 1}})


def test_register_a_reward_and_reject_a_bad_one() -> None:
    from tether.rewards import REWARDS

    @register_reward("_test_shouting")
    def shouting(prompts, completions, weight_per_bang: float = 1.0):
        return [weight_per_bang * c.count("!") for c in completions]

    try:
        assert resolve_reward("_test_shouting[weight_per_bang=0.5]").score(["p"], ["hi!!"]) == [1.0]
        with pytest.raises(ValueError, match="already registered"):
            register_reward("_test_shouting")(shouting)
        with pytest.raises(TetherError, match="reward function '_test_bad': has signature \\(prompts\\)"):
            register_reward("_test_bad")(lambda prompts: [])
    finally:
        REWARDS.pop("_test_shouting", None)


def test_resolve_judge_by_name_and_the_score_command(tmp_path, capsys) -> None:
    from tether.cli import main
    from tether.specs import resolve_judge

    judge = resolve_judge("verifiable:exact_match[answers=gym:arithmetic]")
    assert judge.score(["what is 2 + 2?"], ["2 + 2 = 4"]) == [1.0]
    data = tmp_path / "scored.jsonl"
    rows = [
        {"prompt": "what is 2 + 2?", "completion": "2 + 2 = 4"},
        {"prompt": "add 3 and 4.", "completion": "3 + 4 = 8"},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = "verifiable:exact_match[answers=gym:arithmetic],format[style=equation]:0.5"
    assert main(["score", f"data={data}", f"judge={spec}"]) == 0
    assert json.loads(capsys.readouterr().out) == {"records": 2, "mean_score": 1.0}  # (1.5 + 0.5) / 2


def test_load_reference_answers(tmp_path) -> None:
    from tether.specs import load_prompts

    prompts = load_prompts("gym:arithmetic", 3, seed=0)
    answers = load_reference_answers("gym:arithmetic", 3, seed=0)
    for prompt, answer in zip(prompts, answers):
        a, b = (int(n) for n in prompt.replace("?", " ").replace(".", " ").split() if n.isdigit())
        assert answer == str(a + b)
    assert load_reference_answers("gym:reviews", 2, seed=0) == [None, None]
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        json.dumps({"prompt": "Natalia sold …", "answer": "… 48 + 24 = 72\n#### 72"})
        + "\n"
        + json.dumps({"prompt": "no answer here"})
        + "\n"
        + json.dumps({"prompt": "a number", "answer": 7})
        + "\n"
    )
    answers = load_reference_answers(str(data), 3, seed=0)
    assert answers == ["… 48 + 24 = 72\n#### 72", None, "7"]
    reward = combine({"exact_match": 1.0})
    assert reward.score(
        ["Natalia sold …", "a number"], ["#### 72", "7"], answers=[answers[0], answers[2]]
    ) == [1.0, 1.0]
