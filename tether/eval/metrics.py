"""Small, pure evaluation metrics: win rate under a judge, distinct-n diversity, and an n-gram language
model — the lectures' first language model — as a perplexity yardstick."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence


def win_rate(scores: Sequence[float], baseline_scores: Sequence[float]) -> float:
    """Fraction of prompts where the policy's sample beats the baseline's under the judge (ties count ½)."""
    if len(scores) != len(baseline_scores) or not scores:
        raise ValueError("win_rate needs two equally long, non-empty score lists")
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, baseline_scores)) / len(
        scores
    )


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams / all word n-grams over the texts; 0 when there are none."""
    grams = [
        tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


class NGramLM:
    """A word n-gram language model with add-k smoothing: P(w | h) = (c(h, w) + k) / (c(h) + k·|V|), over a
    vocabulary that includes an end-of-text symbol and an unknown-word symbol."""

    END, UNKNOWN, START = "</s>", "<unk>", "<s>"

    def __init__(self, texts: Sequence[str], n: int = 3, k: float = 0.1) -> None:
        self.n, self.k = n, k
        self.vocab = {w for t in texts for w in t.split()} | {self.END, self.UNKNOWN}
        self.counts: Counter[tuple[str, ...]] = Counter()
        self.context_counts: Counter[tuple[str, ...]] = Counter()
        for text in texts:
            for context, word in self._events(text):
                self.counts[(*context, word)] += 1
                self.context_counts[context] += 1

    def _events(self, text: str) -> list[tuple[tuple[str, ...], str]]:
        words = [w if w in self.vocab else self.UNKNOWN for w in text.split()] + [self.END]
        padded = [self.START] * (self.n - 1) + words
        return [(tuple(padded[i : i + self.n - 1]), padded[i + self.n - 1]) for i in range(len(words))]

    def logprob(self, context: tuple[str, ...], word: str) -> float:
        numerator = self.counts[(*context, word)] + self.k
        return math.log(numerator / (self.context_counts[context] + self.k * len(self.vocab)))

    def perplexity(self, texts: Sequence[str]) -> float:
        """exp of the mean negative log-likelihood per word (end-of-text included)."""
        events = [event for text in texts for event in self._events(text)]
        return math.exp(-sum(self.logprob(c, w) for c, w in events) / len(events))

    @property
    def size(self) -> int:
        """How many numbers the model stores: one count per distinct n-gram and per distinct context."""
        return len(self.counts) + len(self.context_counts)

    def sample(self, prompt: str, rng: random.Random, max_words: int = 40) -> str:
        """Continue ``prompt`` by repeated sampling: draw w ~ P(· | last n−1 words), append it, repeat until
        the end-of-text symbol or ``max_words``. Returns the continuation's words (not the prompt's)."""
        words = [w if w in self.vocab else self.UNKNOWN for w in prompt.split()]
        history = [self.START] * (self.n - 1) + words
        choices = sorted(self.vocab)
        drawn: list[str] = []
        for _ in range(max_words):
            context = tuple(history[len(history) - self.n + 1 :]) if self.n > 1 else ()
            weights = [self.counts[(*context, w)] + self.k for w in choices]
            word = rng.choices(choices, weights=weights)[0]
            if word == self.END:
                break
            drawn.append(word)
            history.append(word)
        return " ".join(drawn)
