import math

import pytest

from tether.eval.metrics import NGramLM, distinct_n, win_rate


def test_win_rate_counts_ties_half():
    assert win_rate([1.0, 0.0, 2.0, 1.0], [0.0, 0.0, 3.0, 0.5]) == (1 + 0.5 + 0 + 1) / 4
    with pytest.raises(ValueError):
        win_rate([1.0], [])


def test_distinct_n_hand_worked():
    # Bigrams: (a b) (b a) (a b) | (a b) → 2 unique of 4.
    assert distinct_n(["a b a b", "a b"], n=2) == 2 / 4
    assert distinct_n(["a b c"], n=1) == 1.0
    assert distinct_n(["a"], n=2) == 0.0


def test_bigram_model_hand_worked():
    lm = NGramLM(["a b", "a a"], n=2, k=1.0)
    # Vocabulary {a, b, </s>, <unk>}: |V| = 4. Events: (<s>→a)×2, (a→b), (b→</s>), (a→a), (a→</s>).
    # P(a | <s>) = (2 + 1) / (2 + 4) = 1/2;  P(b | a) = (1 + 1) / (3 + 4) = 2/7;  P(</s> | b) = (1 + 1) / (1 + 4).
    assert math.isclose(lm.logprob(("<s>",), "a"), math.log(1 / 2))
    assert math.isclose(lm.logprob(("a",), "b"), math.log(2 / 7))
    expected = math.exp(-(math.log(1 / 2) + math.log(2 / 7) + math.log(2 / 5)) / 3)
    assert math.isclose(lm.perplexity(["a b"]), expected)
    assert lm.perplexity(["z"]) > lm.perplexity(["a b"])  # an unknown word is costly


def test_ngram_samples_by_its_counts_and_reports_its_size():
    import random

    lm = NGramLM(["a b c", "a b c"], n=3, k=1e-12)  # smoothing too small to matter
    # Events: (<s> <s>)→a, (<s> a)→b, (a b)→c, (b c)→</s>, each twice: 4 trigrams and 4 contexts stored.
    assert lm.size == 8
    assert lm.sample("a", random.Random(0)) == "b c"  # stops at the end-of-text symbol
    assert lm.sample("", random.Random(0)) == "a b c"
    loose = NGramLM(["a b c"], n=3, k=1.0)
    words = loose.sample("a", random.Random(1), max_words=5).split()
    assert len(words) <= 5 and set(words) <= {"a", "b", "c", "<unk>"}
