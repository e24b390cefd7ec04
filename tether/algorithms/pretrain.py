"""Pre-training: next-token prediction on packed text.

texts → (a tokenizer trained on them, for a tiny model) → token stream cut into blocks of seq_len →
minimise −Σ_t log π_θ(x_{t+1} | x_{≤t}) with AdamW → a plain HF model folder.
"""

from __future__ import annotations

import random

from tether.algorithms.common import fit_next_token, load_records
from tether.config import PretrainConfig
from tether.data.formats import parse_text
from tether.data.tokenize import TokenizedExample, pack, tokenize_texts
from tether.models import build_tiny_model, load_causal_lm, load_tokenizer, train_tokenizer


def run_pretrain(config: PretrainConfig) -> dict[str, float]:
    """Run the pre-training stage; returns the final evaluation metrics."""
    texts = [
        parse_text(record, config.text_field) for record in load_records(config.data, "pretrain", config.seed)
    ]

    if config.model == "tiny":
        tokenizer = train_tokenizer(texts, config.vocab_size)
        model = build_tiny_model(
            tokenizer,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=max(512, config.seq_len),
            seed=config.seed,
        )
    else:
        tokenizer = load_tokenizer(config.model, config.trust_remote_code)
        model = load_causal_lm(config.model, config.trust_remote_code)

    blocks = [TokenizedExample(ids, ids) for ids in pack(tokenize_texts(tokenizer, texts), config.seq_len)]
    random.Random(config.seed).shuffle(blocks)
    n_eval = round(config.eval_fraction * len(blocks))
    eval_blocks, train_blocks = blocks[:n_eval], blocks[n_eval:]

    return fit_next_token(config, model, tokenizer, train_blocks, eval_blocks)
