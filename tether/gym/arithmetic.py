"""A verifiable task: two-number addition with exact answers ("what is 17 + 25?" → "17 + 25 = 42")."""

from __future__ import annotations

import random
import re

from tether.gym.base import Task

PROMPTS = ["what is {a} + {b}?", "compute {a} + {b}.", "add {a} and {b}."]
_ANSWER = re.compile(r"=\s*(-?\d+)")


class ArithmeticTask(Task):
    """Addition of two numbers below ``max_operand``; the answer is checked exactly."""

    name = "arithmetic"
    max_operand = 50

    def _operands(self, rng: random.Random) -> tuple[int, int]:
        return rng.randrange(self.max_operand), rng.randrange(self.max_operand)

    def sample_example(self, rng: random.Random) -> tuple[str, str]:
        a, b = self._operands(rng)
        return rng.choice(PROMPTS).format(a=a, b=b), f"{a} + {b} = {a + b}"

    def document(self, rng: random.Random) -> str:
        lines = []
        for _ in range(rng.randint(3, 6)):
            a, b = self._operands(rng)
            lines.append(f"{a} + {b} = {a + b}.")
        return " ".join(lines)

    @staticmethod
    def expected_answer(prompt: str) -> int | None:
        """The sum a prompt asks for, or None when it holds no two numbers."""
        numbers = [int(n) for n in re.findall(r"-?\d+", prompt)]
        return sum(numbers[:2]) if len(numbers) >= 2 else None

    def reference_answer(self, prompt: str) -> str | None:
        """The requested sum as text (what ``tether.rewards``' exact_match compares with)."""
        expected = self.expected_answer(prompt)
        return None if expected is None else str(expected)

    @staticmethod
    def is_correct(prompt: str, completion: str) -> bool:
        """Exact match: the first ``= N`` in the completion equals the requested sum."""
        found = _ANSWER.search(completion)
        expected = ArithmeticTask.expected_answer(prompt)
        return found is not None and expected is not None and int(found.group(1)) == expected

    def gold_reward(self, prompt: str, completion: str) -> float:
        """1 for the exact sum, 0 otherwise (a verifiable reward)."""
        return float(self.is_correct(prompt, completion))
