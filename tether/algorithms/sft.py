"""Supervised fine-tuning (instruction tuning): next-token loss on response tokens only.

examples (text, prompt/completion or conversations) → chat template → tokens with labels −100 on prompt
and padding → minimise −Σ_{t ∈ response} log π_θ(y_t | x, y_{<t}) → a plain HF model folder (LoRA merged).
"""

from __future__ import annotations

from tqdm.auto import tqdm

from tether.algorithms.common import fit_next_token, load_policy
from tether.config import SFTConfig
from tether.data.formats import SFTExample, parse_sft
from tether.data.templates import ensure_chat_template
from tether.data.tokenize import TokenizedExample, tokenize_sft
from tether.specs import load_records


def tokenize_examples(
    examples: list[SFTExample], tokenizer: object, max_length: int
) -> list[TokenizedExample]:
    """Tokenise SFT examples; those truncated to no response token are dropped (and counted)."""
    tokenized = [tokenize_sft(tokenizer, example, max_length) for example in examples]
    kept = [example for example in tokenized if example is not None]
    if len(kept) < len(tokenized):
        tqdm.write(
            f"sft: dropped {len(tokenized) - len(kept)} examples with no response token within max_length"
        )
    return kept


def run_sft(config: SFTConfig) -> dict[str, float]:
    """Run the SFT stage; returns the final evaluation metrics (``eval/loss`` = NLL per response token)."""
    # Validate all data before loading the model, so a bad record fails fast.
    train_examples = [parse_sft(r) for r in load_records(config.data, "sft_train", config.seed)]
    if config.eval_data:
        held_out = load_records(config.eval_data, "sft_eval", config.seed)
    elif config.data.startswith("gym:"):
        held_out = load_records(config.data, "sft_eval", config.seed)
    else:
        held_out = []
    eval_examples = [parse_sft(r) for r in held_out]

    model, tokenizer = load_policy(config)
    ensure_chat_template(tokenizer)
    train = tokenize_examples(train_examples, tokenizer, config.max_length)
    evaluation = tokenize_examples(eval_examples, tokenizer, config.max_length)

    return fit_next_token(config, model, tokenizer, train, evaluation)
