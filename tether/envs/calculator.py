"""A calculator tool and the built-in ``calculator`` environment on the arithmetic gym task.

``calculate(expression)`` evaluates arithmetic with a small recursive-descent parser — numbers, ``+ - * /
// % **``, parentheses and unary signs — and never runs Python code: there is no ``eval``, no names, no
calls. Limits keep hostile input cheap: the expression's length, the nesting depth, the size of an
exponent and of every intermediate result are bounded. Every failure (a letter, ``1/0``, ``2**10**10``,
unbalanced parentheses) comes back as a one-line ``"error: …"`` string, never as an exception.

Grammar (``**`` binds tighter than a unary sign on its left and is right-associative, as in Python)::

    expression := term (("+" | "-") term)*
    term       := unary (("*" | "/" | "//" | "%") unary)*
    unary      := ("+" | "-") unary | power
    power      := atom ("**" unary)?
    atom       := NUMBER | "(" expression ")"
"""

from __future__ import annotations

import math
import re
from typing import Any

from tether.gym.arithmetic import ArithmeticTask

MAX_LENGTH = 200  # characters of one expression
MAX_DEPTH = 32  # nested parentheses, unary signs and right-nested powers together
MAX_EXPONENT = 64  # |exponent| of a power
MAX_MAGNITUDE = (
    10**15
)  # |value| of every number and intermediate result: floats are exact integers below 2^53

Number = int | float

_TOKEN = re.compile(r"\s*(?:(\d+\.\d*|\.\d+|\d+)|(\*\*|//|[-+*/%()]))")


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate; the message says why."""


def _tokens(expression: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(expression):
        found = _TOKEN.match(expression, position)
        if found is None:
            if expression[position:].strip() == "":
                break
            offending = expression[position:].lstrip()[0]
            raise CalculatorError(f"unexpected character {offending!r}")
        tokens.append(found.group(1) or found.group(2))
        position = found.end()
    return tokens


def _checked(value: Number) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("result is not a finite number")
    if abs(value) > MAX_MAGNITUDE:
        raise CalculatorError(f"result too large (limit {MAX_MAGNITUDE:.0e})")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent too large (limit {MAX_EXPONENT})")
    if base == 0 and exponent < 0:
        raise CalculatorError("division by zero")
    if base < 0 and not float(exponent).is_integer():
        raise CalculatorError("fractional power of a negative number")
    # |base|^exponent estimated in logs before computing, so no huge integer is ever built.
    if base != 0 and exponent * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE):
        raise CalculatorError(f"result too large (limit {MAX_MAGNITUDE:.0e})")
    if isinstance(base, int) and isinstance(exponent, int) and exponent >= 0:
        return base**exponent
    return float(base) ** float(exponent)


def _apply(operator: str, left: Number, right: Number) -> Number:
    if operator == "+":
        return _checked(left + right)
    if operator == "-":
        return _checked(left - right)
    if operator == "*":
        return _checked(left * right)
    if operator == "**":
        return _checked(_power(left, right))
    if right == 0:
        raise CalculatorError("division by zero")
    if operator == "/":
        return _checked(left / right)
    if operator == "//":
        return _checked(left // right)
    return _checked(left % right)  # "%"


class _Parser:
    """Recursive descent over the token list; ``depth`` counts the open recursions that can nest."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.position, self.depth = tokens, 0, 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise CalculatorError("unexpected end of expression")
        self.position += 1
        return token

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CalculatorError(f"expression nested too deeply (limit {MAX_DEPTH})")

    def expression(self) -> Number:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = _apply(self.take(), value, self.term())
        return value

    def term(self) -> Number:
        value = self.unary()
        while self.peek() in ("*", "/", "//", "%"):
            value = _apply(self.take(), value, self.unary())
        return value

    def unary(self) -> Number:
        if self.peek() in ("+", "-"):
            sign = self.take()
            self.nested()
            value = self.unary()
            self.depth -= 1
            return -value if sign == "-" else value
        return self.power()

    def power(self) -> Number:
        base = self.atom()
        if self.peek() != "**":
            return base
        self.take()
        self.nested()
        exponent = self.unary()
        self.depth -= 1
        return _apply("**", base, exponent)

    def atom(self) -> Number:
        token = self.take()
        if token == "(":
            self.nested()
            value = self.expression()
            if self.take() != ")":
                raise CalculatorError("expected ')'")
            self.depth -= 1
            return value
        if token[0].isdigit() or token[0] == ".":
            value: Number = float(token) if "." in token else int(token)
            return _checked(value)
        raise CalculatorError(f"unexpected {token!r}")


def evaluate(expression: str) -> Number:
    """The value of an arithmetic ``expression``; raises ``CalculatorError`` (a ``ValueError``) with a
    one-line reason for anything it will not or cannot evaluate. Integers stay exact; ``/`` gives a float."""
    if not isinstance(expression, str):
        raise CalculatorError(f"expected a string, got {type(expression).__name__}")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression too long ({len(expression)} characters, limit {MAX_LENGTH})")
    tokens = _tokens(expression)
    if not tokens:
        raise CalculatorError("empty expression")
    parser = _Parser(tokens)
    value = parser.expression()
    if parser.peek() is not None:
        raise CalculatorError(f"unexpected {parser.peek()!r}")
    return value


def format_number(value: Number) -> str:
    """Integers as integers (``6/3`` → ``2``), other floats with 12 significant digits."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, int) else f"{value:.12g}"


def calculate(expression: Any) -> str:
    """The calculator as a tool: the formatted value of ``expression``, or ``"error: REASON"``. It never
    raises, whatever the input."""
    try:
        return format_number(evaluate(expression))
    except (CalculatorError, ArithmeticError, RecursionError) as err:
        return f"error: {err}"


CALL = re.compile(r"<calc>(.*?)</calc>", re.DOTALL)
INSTRUCTIONS = "You may use a calculator: write <calc>EXPRESSION</calc> and its result comes back."


class CalculatorEnv:
    """The arithmetic task with a calculator tool, one episode per prompt (see ``tether.envs.base``).

    ``reset(prompt)`` shows the question (with a line on how to call the tool, unless ``instructions`` is
    empty). Each ``step(turn)``:

    - a turn holding ``<calc>EXPR</calc>`` (the first one counts) gets the calculator's answer to EXPR as
      the tool message, reward 0, not done;
    - a turn without a call is the final answer: it is scored with the task's gold reward (1 for the exact
      sum written as ``= N``, else 0; ``ArithmeticTask.gold_reward``) and the episode is done;
    - the ``max_turns``-th turn always ends the episode and is scored the same way, call or not.
    """

    name = "calculator"

    def __init__(self, max_turns: int = 4, seed: int = 0, instructions: str = INSTRUCTIONS) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.max_turns, self.instructions = max_turns, instructions
        self.task = ArithmeticTask(seed=seed)
        self.prompt: str | None = None
        self.turns, self.done = 0, False

    def reset(self, prompt: Any) -> str:
        from tether.rewards.verifiable import prompt_text

        self.prompt, self.turns, self.done = prompt_text(prompt), 0, False
        return f"{self.prompt}\n{self.instructions}" if self.instructions else self.prompt

    def step(self, action_text: str) -> tuple[str | None, float, bool]:
        if self.prompt is None:
            raise RuntimeError("CalculatorEnv.step before reset")
        if self.done:
            raise RuntimeError("CalculatorEnv.step after the episode ended; call reset")
        self.turns += 1
        call = CALL.search(action_text)
        if call is not None and self.turns < self.max_turns:
            return calculate(call.group(1)), 0.0, False
        self.done = True
        return None, self.task.gold_reward(self.prompt, action_text), True


def tool_use_transcripts(split: str = "train", n: int | None = None, seed: int = 0) -> list[dict]:
    """Demonstrations of the calculator on the arithmetic task, as SFT records ``{"messages": …}``: the
    question as ``CalculatorEnv.reset`` shows it, a call ``<calc>a + b</calc>``, the tool's answer and the
    final ``a + b = N``. Supervised fine-tuning on them teaches the call syntax before RL."""
    task = ArithmeticTask(seed=seed)
    records = []
    for prompt in task.prompts(split, n=n):
        numbers = [int(x) for x in re.findall(r"-?\d+", prompt)[:2]]
        expression = f"{numbers[0]} + {numbers[1]}"
        records.append(
            {
                "messages": [
                    {"role": "user", "content": f"{prompt}\n{INSTRUCTIONS}"},
                    {"role": "assistant", "content": f"<calc>{expression}</calc>"},
                    {"role": "tool", "content": calculate(expression)},
                    {"role": "assistant", "content": f"{expression} = {sum(numbers)}"},
                ]
            }
        )
    return records
