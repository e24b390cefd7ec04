"""The ladder's measurements (eval/ladder.py): per-word perplexity charges a neural LM for every token of a
document and its end, read after an end-of-text token; parameters count tied weights once."""

import math

import pytest
import torch

from tether.eval.ladder import (
    continuation_prompts,
    count_parameters,
    neural_rung,
    ngram_rung,
    perplexity_per_word,
    text_nll,
    words_in,
)
from tether.eval.metrics import NGramLM
from tether.models import build_rnn_model

TEXTS = ["review of the lid: great.", "the screen is poor. i would call it bad. in short, weak."]


def by_full_logits(model, tokenizer, text):
    ids = [
        tokenizer.eos_token_id,
        *tokenizer(text, add_special_tokens=False)["input_ids"],
        tokenizer.eos_token_id,
    ]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    return -sum(float(logprobs[t, ids[t + 1]]) for t in range(len(ids) - 1))


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_text_nll_charges_every_token_and_the_end(kind, tokenizer, make_model):
    model = build_rnn_model(tokenizer, hidden_size=16, seed=2) if kind == "rnn" else make_model(seed=2)
    model.eval()
    expected = [by_full_logits(model, tokenizer, text) for text in TEXTS]
    assert text_nll(model, tokenizer, TEXTS[:1]) == pytest.approx(expected[0], rel=1e-5)
    assert text_nll(model, tokenizer, TEXTS, batch_size=2) == pytest.approx(sum(expected), rel=1e-5)  # padded
    assert words_in(TEXTS) == 5 + 12 + 2
    assert perplexity_per_word(model, tokenizer, TEXTS) == pytest.approx(
        math.exp(sum(expected) / 19), rel=1e-5
    )


def test_rungs_report_size_time_and_continuations(tokenizer):
    model = build_rnn_model(tokenizer, hidden_size=16, num_layers=2, cell="lstm", seed=0)
    vocab = len(tokenizer)
    # Tied embedding once (V·H), then per layer 4 gates × (H·H input + H·H recurrent + 2·H biases).
    assert count_parameters(model) == vocab * 16 + 2 * 4 * (16 * 16 + 16 * 16 + 2 * 16)
    openings = continuation_prompts([TEXTS[0], TEXTS[0], *TEXTS], n=2, words=3)
    assert openings == ["review of the", "the screen is"]  # distinct openings, in order
    rung = neural_rung(model, tokenizer, TEXTS, openings, seconds=1.5)
    assert rung["parameters"] == count_parameters(model) and rung["train_seconds"] == 1.5
    assert [s["prompt"] for s in rung["samples"]] == openings
    assert rung["ppl_per_word"] == pytest.approx(perplexity_per_word(model, tokenizer, TEXTS))
    ngram = NGramLM(TEXTS, n=3)
    row = ngram_rung(ngram, TEXTS, openings, seconds=0.25)
    assert row["ppl_per_word"] == ngram.perplexity(TEXTS) and row["parameters"] == ngram.size
    assert row["samples"][0]["prompt"] == "review of the"
