"""The calculator tool: exact answers on good input, one-line errors (never exceptions, never eval) on bad."""

from __future__ import annotations

import pytest

from tether.envs.calculator import MAX_DEPTH, MAX_LENGTH, CalculatorError, calculate, evaluate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("12*7", "84"),
        (" 2 + 3 * 4 ", "14"),  # * before +
        ("(2 + 3) * 4", "20"),
        ("7 / 2", "3.5"),
        ("6 / 3", "2"),  # a float that is an integer prints as one
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),  # floor division, as in Python
        ("7 % 3", "1"),
        ("-7 % 3", "2"),
        ("2 ** 10", "1024"),
        ("2 ** 3 ** 2", "512"),  # right-associative: 2^(3^2)
        ("-2 ** 2", "-4"),  # ** binds tighter than a unary minus on its left
        ("2 ** -1", "0.5"),
        ("--3", "3"),
        ("+4 - -4", "8"),
        ("1.5 * 4", "6"),
        (".5 + 0.25", "0.75"),
        ("1 / 3", "0.333333333333"),
        ("10 - 4 - 3", "3"),  # left-associative
        ("100 / 10 / 5", "2"),
        ("999999999999999 + 1", "1000000000000000"),  # exactly the magnitude limit 10^15
    ],
)
def test_good_expressions(expression: str, expected: str) -> None:
    assert calculate(expression) == expected


def test_integers_stay_exact() -> None:
    assert evaluate("123456789 * 1000000") == 123_456_789_000_000
    assert isinstance(evaluate("3 * 4"), int)
    assert isinstance(evaluate("8 / 4"), float)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os')", "unexpected character '_'"),
        ("__import__('os').system('ls')", "unexpected character '_'"),
        ("abs(-3)", "unexpected character 'a'"),
        ("2 + x", "unexpected character 'x'"),
        ("1e5", "unexpected character 'e'"),
        ("2**10**10", "exponent too large"),  # 10^10 as an exponent: refused before computing
        ("9**9**9", "exponent too large"),
        ("10 ** 16", "result too large"),  # 16·log10(10) > 15: refused before computing
        ("0.5 ** -60", "result too large"),
        ("99999999 * 99999999", "result too large"),
        ("1000000000000001", "result too large"),
        ("1/0", "division by zero"),
        ("1 // (2 - 2)", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("(-8) ** 0.5", "fractional power of a negative number"),
        ("(1 + 2", "unexpected end of expression"),
        ("1 + 2)", "unexpected ')'"),
        ("2 3", "unexpected '3'"),
        ("*3", "unexpected '*'"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("1 +", "unexpected end of expression"),
    ],
)
def test_hostile_and_bad_input_is_a_clean_error(expression: str, reason: str) -> None:
    result = calculate(expression)
    assert result.startswith("error: ")
    assert reason in result
    assert "\n" not in result
    with pytest.raises(CalculatorError):
        evaluate(expression)


def test_limits_on_length_and_depth() -> None:
    assert calculate("1+" * 100 + "1") == "error: expression too long (201 characters, limit 200)"
    assert calculate("1+" * 99 + "1") == "100"
    assert len("1+" * 99 + "1") == MAX_LENGTH - 1
    deep = "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1)
    assert calculate(deep) == f"error: expression nested too deeply (limit {MAX_DEPTH})"
    fine = "(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH
    assert calculate(fine) == "1"
    assert "nested too deeply" in calculate("-" * (MAX_DEPTH + 1) + "1")
    assert "nested too deeply" in calculate("1" + "**1" * (MAX_DEPTH + 1))
    # Far past Python's recursion limit: still a clean error (the length limit comes first).
    assert calculate("(" * 5000 + "1" + ")" * 5000).startswith("error: expression too long")


def test_anything_not_a_string_is_an_error_not_an_exception() -> None:
    assert calculate(None) == "error: expected a string, got NoneType"
    assert calculate(42) == "error: expected a string, got int"
    assert calculate(b"1+1") == "error: expected a string, got bytes"
