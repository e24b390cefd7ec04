"""Reward model: Bradley–Terry maximum likelihood on preference pairs.

pairs (x, y_w, y_l) → r_θ(x, y) = w · h_last(x, y) (the LM with a scalar head) → minimise
−log σ(r_θ(x, y_w) − r_θ(x, y_l) − margin) (+ optional centering), rankings weighted so each prompt counts
once → evaluate accuracy, BT log-likelihood and calibration on held-out pairs.

With ``pairwise=true`` the same stage trains a two-argument preference model (Munos et al. 2023, §3 and
§8: a preference model reads both responses): f_θ(x, y, y') = w · h_last of the pairwise judge prompt
showing y as (A) and y' as (B), and P(y ≻ y' | x) = σ(f_θ(x, y, y') − f_θ(x, y', y)) — antisymmetric by
construction, and free to be non-transitive, which no scalar reward is. Its loss is the same
−log σ(·) with the two orders of a pair in the places of r_θ(x, y_w) and r_θ(x, y_l).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from tether.algorithms.common import finish, load_records
from tether.algorithms.offline import split_records
from tether.config import RewardModelConfig
from tether.data.preference import PreferencePair, as_messages, load_pairs
from tether.data.tokenize import TokenizedExample, pad_collate, tokenize_conversation
from tether.engine import Trainer
from tether.eval.reward import pairwise_metrics
from tether.judges.preference_model import tokenize_preference_input
from tether.losses.reward import bradley_terry_loss
from tether.models import apply_lora, load_tokenizer
from tether.models.reward import ScalarReward, reward_model_from_lm


@dataclass
class TokenizedPair:
    chosen: list[int]
    rejected: list[int]
    margin: float
    has_margin: bool
    weight: float


def tokenize_pairs(
    pairs: list[PreferencePair], tokenizer: object, max_length: int, pairwise: bool = False
) -> list[TokenizedPair]:
    """Each pair as two token sequences: (x, y_w) and (x, y_l); with ``pairwise``, (x, y_w, y_l) and
    (x, y_l, y_w) — the two orders of the pairwise prompt."""
    if pairwise:
        return [
            TokenizedPair(
                tokenize_preference_input(tokenizer, p.prompt, p.chosen, p.rejected, max_length),
                tokenize_preference_input(tokenizer, p.prompt, p.rejected, p.chosen, max_length),
                p.margin or 0.0,
                p.margin is not None,
                p.weight,
            )
            for p in pairs
        ]
    return [
        TokenizedPair(
            tokenize_conversation(tokenizer, as_messages(p.prompt, p.chosen), max_length),
            tokenize_conversation(tokenizer, as_messages(p.prompt, p.rejected), max_length),
            p.margin or 0.0,
            p.margin is not None,
            p.weight,
        )
        for p in pairs
    ]


def collate_pairs(pairs: list[TokenizedPair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows in one padded batch (2P, T): one forward for both."""
    rows = [TokenizedExample(p.chosen, p.chosen) for p in pairs] + [
        TokenizedExample(p.rejected, p.rejected) for p in pairs
    ]
    batch = pad_collate(rows, pad_token_id)
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "margin": torch.tensor([p.margin for p in pairs]),
        "has_margin": torch.tensor([p.has_margin for p in pairs]),
        "weight": torch.tensor([p.weight for p in pairs]),
    }


def pair_rewards(module: ScalarReward, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    rewards = module(batch["input_ids"], batch["attention_mask"])  # (2P,)
    return rewards.chunk(2)


def run_reward_model(config: RewardModelConfig) -> dict:
    """Train, save (a plain ``…ForSequenceClassification`` folder) and evaluate a reward model."""
    records = load_records(config.data, "preferences", config.seed)
    if config.eval_data:
        train_records, eval_records = records, load_records(config.eval_data, "preferences", config.seed)
    else:
        train_records, eval_records = split_records(records, config.eval_fraction, config.seed)
    train_pairs = load_pairs(train_records)
    eval_pairs = load_pairs(eval_records) if eval_records else []

    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    model = reward_model_from_lm(config.model, config.trust_remote_code, config.seed)
    if config.lora:
        model = apply_lora(
            model,
            config.lora_r,
            config.lora_alpha,
            config.lora_dropout,
            config.lora_target_modules,
            task_type="SEQ_CLS",
        )
    train = tokenize_pairs(train_pairs, tokenizer, config.max_length, config.pairwise)
    held_out = tokenize_pairs(eval_pairs, tokenizer, config.max_length, config.pairwise)
    # Rankings weight their pairs 1/#pairs; rescale so the average pair weighs 1 (the learning rate keeps its meaning).
    mean_weight = sum(p.weight for p in train) / len(train)
    for pair in train:
        pair.weight /= mean_weight

    def loss_fn(module: ScalarReward, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        chosen, rejected = pair_rewards(module, batch)
        margin = torch.where(batch["has_margin"], batch["margin"], torch.zeros_like(batch["margin"]))
        losses, metrics = bradley_terry_loss(chosen, rejected, margin=margin, center_coef=config.center_coef)
        return (losses * batch["weight"]).sum(), metrics

    trainer = Trainer(
        config,
        ScalarReward(model),
        train,
        lambda pairs: collate_pairs(pairs, tokenizer.pad_token_id),
        loss_fn=loss_fn,
        count_fn=lambda batch: float(batch["weight"].sum()),
        eval_data=held_out,
    )
    trainer.fit()
    metrics = evaluate_pairs(trainer.unwrapped(), held_out, tokenizer.pad_token_id, config.eval_batch_size)
    if trainer.accelerator.is_main_process:
        Path(config.output_dir, "eval.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    finish(trainer, trainer.unwrapped().model, tokenizer, config)  # last: marks the stage done
    return metrics


@torch.no_grad()
def evaluate_pairs(
    module: ScalarReward, pairs: list[TokenizedPair], pad_token_id: int, batch_size: int = 32
) -> dict:
    """Pairwise accuracy, BT NLL, calibration and reward statistics on tokenised held-out pairs."""
    if not pairs:
        return {}
    module.eval()
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        c, r = pair_rewards(module, collate_pairs(pairs[start : start + batch_size], pad_token_id))
        chosen.append(c)
        rejected.append(r)
    return pairwise_metrics(torch.cat(chosen), torch.cat(rejected))
