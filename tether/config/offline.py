"""The configs of the offline training stages (fixed data) and of those that train offline in rounds."""

from __future__ import annotations

from typing import Literal

from tether.config.loader import defaults, option
from tether.config.sections import (
    BestOfConfig,
    DataConfig,
    EvalDataConfig,
    HeldOutConfig,
    LengthConfig,
    ModelConfig,
    PairsConfig,
    PreferenceLossConfig,
    RankingConfig,
    RoundsConfig,
    TrainConfig,
)


@defaults(
    output_dir="runs/pretrain",
    data="gym:reviews",
    eval_fraction=0.02,
    learning_rate=3e-3,
    weight_decay=0.01,
)
class PretrainConfig(HeldOutConfig, DataConfig, TrainConfig):
    """Pre-training by next-token prediction on packed text."""

    model: str = option(
        "tiny", "'tiny' builds a new model from the fields below; or a HF folder to continue."
    )
    architecture: Literal["transformer", "rnn"] = option(
        "transformer",
        "The new model of model=tiny: a tiny Llama (hidden_size, num_layers, num_heads, intermediate_size) "
        "or a recurrent LM (rnn_cell, rnn_hidden_size, rnn_layers); each refuses the other's size fields. "
        "'rnn' with a model folder requires that folder to hold a tether RNN.",
    )
    text_field: str = option("text", "Field holding the text in each record.")
    seq_len: int = option(128, "Tokens per packed training block.", minimum=8)
    tokenizer: str = option(
        "",
        "model=tiny: '' trains a BPE tokenizer of vocab_size on the corpus; or a model folder whose tokenizer "
        "to use (e.g. an RNN with the same tokenizer as a pre-trained Transformer). A model folder brings its own.",
    )
    vocab_size: int = option(
        512, "Tokenizer vocabulary (tiny model with tokenizer=''; trained on the corpus).", minimum=260
    )
    split_digits: bool = option(
        False,
        "The trained tokenizer (tokenizer='') keeps every digit a token of its own, so a number is its digits "
        "(arithmetic: sums carried digit by digit, numbers copied digit by digit) instead of a BPE merge.",
    )
    hidden_size: int = option(128, "Tiny Transformer width.", minimum=8)
    num_layers: int = option(4, "Tiny Transformer depth.", minimum=1)
    num_heads: int = option(4, "Tiny Transformer attention heads.", minimum=1)
    intermediate_size: int = option(384, "Tiny Transformer MLP width.", minimum=8)
    rnn_cell: Literal["lstm", "gru"] = option("lstm", "Recurrent cell of architecture=rnn.")
    rnn_hidden_size: int = option(
        512,
        "RNN width: embedding and state size (architecture=rnn; tied input/output embeddings).",
        minimum=8,
    )
    rnn_layers: int = option(1, "Stacked recurrent layers (architecture=rnn).", minimum=1)


@defaults(output_dir="runs/sft", model="runs/pretrain", data="gym:reviews")
class SFTConfig(LengthConfig, EvalDataConfig, DataConfig, TrainConfig, ModelConfig):
    """Supervised fine-tuning (instruction tuning) with loss on response tokens only."""


@defaults(output_dir="runs/reward_model", eval_fraction=0.1, num_epochs=2.0)
class RewardModelConfig(HeldOutConfig, PairsConfig, EvalDataConfig, DataConfig, TrainConfig, ModelConfig):
    """A reward model: the LM with a scalar head, trained by Bradley–Terry maximum likelihood."""

    center_coef: float = option(0.0, "Reward-centering weight: + c·(r_w + r_l)² per pair.", minimum=0.0)
    pairwise: bool = option(
        False,
        "Train a two-argument preference model P(y ≻ y' | x) = σ(f(x, y, y') − f(x, y', y)) instead of a "
        "reward: it can represent non-transitive preferences (for Nash-MD).",
    )


@defaults(output_dir="runs/dpo", learning_rate=2e-4)
class DPOConfig(PreferenceLossConfig, HeldOutConfig, PairsConfig, DataConfig, TrainConfig, ModelConfig):
    """Offline preference optimisation: DPO and its family, from pairs or rankings, no sampling."""

    ref_model: str = option(
        "", "A different frozen reference; '' = the starting model (with LoRA: adapters off)."
    )


@defaults(
    output_dir="runs/kto",
    learning_rate=2e-4,
    minimums={"batch_size": 2},  # KTO's reference point is estimated from the other examples of a batch
    unused={"group_by_prompt": "KTO's examples are unpaired"},
)
class KTOConfig(HeldOutConfig, PairsConfig, DataConfig, TrainConfig, ModelConfig):
    """KTO on unpaired thumbs-up/down data (or rankings: best completion up, worst down)."""

    beta: float = option(0.1, "β of KTO's value function.", minimum=0.0)
    desirable_weight: float = option(1.0, "λ_D: weight of desirable examples.", minimum=0.0)
    undesirable_weight: float = option(1.0, "λ_U: weight of undesirable examples.", minimum=0.0)


@defaults(
    output_dir="runs/iterative_dpo",
    num_samples=2,
    data="",
    eval_fraction=0.0,
    unused={"data": "each round collects its own pairs"},
)
class IterativeDPOConfig(RankingConfig, RoundsConfig, DPOConfig):
    """Iterative DPO: rounds of sample K per prompt from the current policy → label with a judge → DPO."""

    reference: Literal["initial", "previous"] = option(
        "initial", "The DPO reference of each round: the starting model, or the previous round's policy."
    )


@defaults(
    output_dir="runs/rft",
    learning_rate=2e-4,
    unused={
        "data": "each round fine-tunes on its own selected samples",
        "eval_data": "each round fine-tunes on its own selected samples, with no held-out data",
    },
)
class RFTConfig(BestOfConfig, RoundsConfig, SFTConfig):
    """Rejection-sampling fine-tuning: rounds of sample n → keep the best by a judge → SFT on them."""
