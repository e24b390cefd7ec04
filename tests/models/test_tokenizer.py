"""The tiny model's tokenizer: byte-level BPE trained on the corpus, optionally one token per digit."""

from __future__ import annotations

import pytest

from tether.config import ConfigError, PretrainConfig
from tether.gym import get_task
from tether.models import train_tokenizer

TEXT = "47 + 4 = 51. add 128 and 9."


@pytest.fixture(scope="module")
def corpus():
    return get_task("arithmetic").pretrain_texts()[:1000]


def test_split_digits_makes_every_digit_a_token_and_round_trips(corpus):
    merged = train_tokenizer(corpus, 400)
    split = train_tokenizer(corpus, 400, split_digits=True)
    pieces = [split.decode([i]) for i in split(TEXT)["input_ids"]]
    digits = [p for p in pieces if any(c.isdigit() for c in p)]
    assert digits == list("474511289")  # each digit alone, in order
    assert split.decode(split(TEXT)["input_ids"]) == TEXT
    # without it BPE merges the frequent numbers into single tokens
    assert any(
        len(p.strip()) > 1 and p.strip().isdigit()
        for p in (merged.decode([i]) for i in merged(TEXT)["input_ids"])
    )


def test_split_digits_applies_to_a_tokenizer_trained_here(tmp_path):
    from tether.algorithms.pretrain import run_pretrain

    with pytest.raises(ConfigError, match="field 'split_digits'"):
        run_pretrain(
            PretrainConfig(model=str(tmp_path / "folder"), split_digits=True, output_dir=str(tmp_path))
        )
