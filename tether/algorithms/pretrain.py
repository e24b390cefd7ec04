"""Pre-training: next-token prediction on packed text.

texts → (a tokenizer trained on them, for a tiny model) → token stream cut into blocks of seq_len →
minimise −Σ_t log π_θ(x_{t+1} | x_{≤t}) with AdamW → a plain HF model folder.

The tiny model is a Llama (``architecture=transformer``) or a recurrent LM (``architecture=rnn``, see
``models/rnn.py``): the same data, loss, optimiser and output folder, so the two compare directly.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from tether.algorithms.common import fit_next_token
from tether.config import ConfigError, PretrainConfig
from tether.data.formats import parse_text
from tether.data.tokenize import TokenizedExample, pack, tokenize_texts
from tether.models import (
    build_rnn_model,
    build_tiny_model,
    is_rnn,
    load_causal_lm,
    load_tokenizer,
    train_tokenizer,
)
from tether.specs import load_records

SIZE_FIELDS = {
    "transformer": ("hidden_size", "num_layers", "num_heads", "intermediate_size"),
    "rnn": ("rnn_cell", "rnn_hidden_size", "rnn_layers"),
}


def check_model_fields(config: PretrainConfig) -> None:
    """Refuse fields that the model being trained would not honour: the other architecture's size fields
    for a new tiny model; any new-model field (sizes, vocab_size, tokenizer) when continuing a folder."""
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    if config.model == "tiny":
        refused = [
            name for kind, names in SIZE_FIELDS.items() if kind != config.architecture for name in names
        ]
        reason = f"applies to the other architecture, not architecture={config.architecture}"
    else:
        refused = [
            *(n for names in SIZE_FIELDS.values() for n in names),
            "vocab_size",
            "tokenizer",
            "split_digits",
        ]
        reason = "applies to a new model (model=tiny); a model folder keeps its own size and tokenizer"
    for name in refused:
        if getattr(config, name) != defaults[name]:
            raise ConfigError(f"field '{name}': {reason}")


def build_model(config: PretrainConfig, texts: list[str]) -> tuple[Any, Any]:
    """The model and tokenizer that training starts from (see the module docstring)."""
    if config.model != "tiny":
        tokenizer = load_tokenizer(config.model, config.trust_remote_code)
        model = load_causal_lm(config.model, config.trust_remote_code)
        if config.architecture == "rnn" and not is_rnn(model):
            raise ConfigError(f"field 'architecture': rnn, but model '{config.model}' is not a tether RNN")
        return model, tokenizer
    if config.tokenizer and config.split_digits:
        raise ConfigError("field 'split_digits': applies to a tokenizer trained here (tokenizer='')")
    tokenizer = (
        load_tokenizer(config.tokenizer)
        if config.tokenizer
        else train_tokenizer(texts, config.vocab_size, split_digits=config.split_digits)
    )
    if config.architecture == "rnn":
        model = build_rnn_model(
            tokenizer,
            hidden_size=config.rnn_hidden_size,
            num_layers=config.rnn_layers,
            cell=config.rnn_cell,
            seed=config.seed,
        )
    else:
        model = build_tiny_model(
            tokenizer,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=max(512, config.seq_len),
            seed=config.seed,
        )
    return model, tokenizer


def run_pretrain(config: PretrainConfig) -> dict[str, float]:
    """Run the pre-training stage; returns the final evaluation metrics."""
    check_model_fields(config)
    texts = [
        parse_text(record, config.text_field) for record in load_records(config.data, "pretrain", config.seed)
    ]
    model, tokenizer = build_model(config, texts)

    blocks = [TokenizedExample(ids, ids) for ids in pack(tokenize_texts(tokenizer, texts), config.seq_len)]
    random.Random(config.seed).shuffle(blocks)
    n_eval = round(config.eval_fraction * len(blocks))
    eval_blocks, train_blocks = blocks[:n_eval], blocks[n_eval:]

    return fit_next_token(config, model, tokenizer, train_blocks, eval_blocks)
