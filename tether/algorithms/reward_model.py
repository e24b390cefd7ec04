"""Reward model: Bradley–Terry maximum likelihood on preference pairs.

pairs (x, y_w, y_l) → r_θ(x, y) = w · h_last(x, y) (the LM with a scalar head) → minimise
−log σ(r_θ(x, y_w) − r_θ(x, y_l) − margin) (+ optional centering), rankings weighted so each prompt counts
once → evaluate accuracy, BT log-likelihood and calibration on held-out pairs.

A batch's chosen and rejected sequences go through the backbone in one forward of a shared-prefix layout
(``data/packing.py: share_prefixes``, as DPO's): the sequences of a prompt compute their common prefix
once, and a response repeated across a ranking's pairs once; the scalar head reads each sequence's last
token, and no vocabulary logits are computed. The held-out pairs are scored once, at the end (and every
``eval_every`` steps), prompt by prompt in the same layout; that one pass gives both the logged ``eval/``
metrics and ``eval.json``.

With ``pairwise=true`` the same stage trains a two-argument preference model (Munos et al. 2023, §3 and
§8: a preference model reads both responses): f_θ(x, y, y') = w · h_last of the pairwise judge prompt
showing y as (A) and y' as (B), and P(y ≻ y' | x) = σ(f_θ(x, y, y') − f_θ(x, y', y)) — antisymmetric by
construction, and free to be non-transitive, which no scalar reward is. Its loss is the same
−log σ(·) with the two orders of a pair in the places of r_θ(x, y_w) and r_θ(x, y_l).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tether.algorithms.common import finish
from tether.algorithms.offline import split_records
from tether.config import RewardModelConfig
from tether.data.packing import pack_examples, share_prefixes
from tether.data.preference import PreferencePair, as_messages, load_pairs
from tether.data.tokenize import TokenizedExample, TokenizedPair, pad_collate, tokenize_conversation
from tether.engine import Trainer
from tether.eval.reward import pairwise_metrics
from tether.judges.preference_model import tokenize_preference_input
from tether.losses.reward import bradley_terry_loss
from tether.models import apply_lora, load_tokenizer
from tether.models.forward import shares_prefixes
from tether.models.reward import ScalarReward, reward_model_from_lm
from tether.ops.logprobs import IGNORE_INDEX
from tether.specs import load_records


def tokenize_pairs(
    pairs: list[PreferencePair], tokenizer: object, max_length: int, pairwise: bool = False
) -> list[TokenizedPair[list[int]]]:
    """Each pair as two token sequences: (x, y_w) and (x, y_l); with ``pairwise``, (x, y_w, y_l) and
    (x, y_l, y_w) — the two orders of the pairwise prompt."""
    prompt_ids: dict[str, int] = {}

    def prompt_id(prompt: Any) -> int:
        key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
        return prompt_ids.setdefault(key, len(prompt_ids))

    if pairwise:
        return [
            TokenizedPair(
                tokenize_preference_input(tokenizer, p.prompt, p.chosen, p.rejected, max_length),
                tokenize_preference_input(tokenizer, p.prompt, p.rejected, p.chosen, max_length),
                p.weight,
                p.margin,
                prompt_id(p.prompt),
            )
            for p in pairs
        ]
    return [
        TokenizedPair(
            tokenize_conversation(tokenizer, as_messages(p.prompt, p.chosen), max_length),
            tokenize_conversation(tokenizer, as_messages(p.prompt, p.rejected), max_length),
            p.weight,
            p.margin,
            prompt_id(p.prompt),
        )
        for p in pairs
    ]


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``sequences`` agree on."""
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for other in sequences[1:]:
        length = next((t for t in range(length) if other[t] != first[t]), length)
    return length


def prefix_labels(sequences: Sequence[list[int]], groups: Sequence[int]) -> list[list[int]]:
    """Labels that cut each sequence where the sequences of its group (its prompt) stop agreeing, for
    :func:`tether.data.packing.share_prefixes`: the group's common prefix becomes the shared prefix and
    each distinct rest a branch (a branch keeps at least the sequence's last token, which the head reads).
    A reward model predicts no token, so these labels only place the cut."""
    members: dict[int, list[int]] = {}
    for n, group in enumerate(groups):
        members.setdefault(group, []).append(n)
    cut = [0] * len(sequences)
    for indices in members.values():
        group_sequences = [sequences[n] for n in indices]
        shared = max(0, min(common_prefix_length(group_sequences), min(map(len, group_sequences)) - 1))
        for n in indices:
            cut[n] = shared
    # share_prefixes cuts one token before the first label: label from position cut + 1 on.
    return [[IGNORE_INDEX] * (c + 1) + list(s[c + 1 :]) for s, c in zip(sequences, cut)]


def sequence_layout(
    sequences: Sequence[list[int]],
    groups: Sequence[int],
    pad_token_id: int,
    pack_length: int,
    share_prefix: bool,
) -> dict[str, torch.Tensor]:
    """The tensors :class:`ScalarReward` takes for N sequences (``groups``: a prompt id per sequence).

    - ``pack_length`` > 0 and ``share_prefix`` (the model takes 4-D masks): a shared-prefix layout; the
      sequences of a prompt compute their common prefix once and a repeated sequence once;
    - ``pack_length`` > 0 only: padding-free rows (position-id packing);
    - ``pack_length`` 0: one right-padded row per sequence.

    Returns input_ids and attention_mask or position_ids, and ``last`` (N,): each sequence's last token in
    the flattened rows.
    """
    lengths = torch.tensor([len(s) for s in sequences])
    if pack_length > 0 and share_prefix:
        layout = share_prefixes(sequences, prefix_labels(sequences, groups), pad_token_id, pack_length)
        return {
            "input_ids": layout["input_ids"],
            "attention_mask": layout["attention_mask"],
            "position_ids": layout["position_ids"],
            "last": layout["index"][torch.arange(len(sequences)), lengths - 1],
        }
    if pack_length > 0:
        packed = pack_examples([TokenizedExample(s, s) for s in sequences], pad_token_id, pack_length)
        segment = packed["segment"].reshape(-1)  # (R·L,) which sequence each position holds
        inside = segment >= 0
        positions = torch.arange(segment.numel())[inside]
        last = torch.zeros(len(sequences), dtype=torch.long).scatter_reduce(
            0, segment[inside], positions, reduce="amax"
        )
        return {"input_ids": packed["input_ids"], "position_ids": packed["position_ids"], "last": last}
    padded = pad_collate([TokenizedExample(s, s) for s in sequences], pad_token_id)
    width = padded["input_ids"].shape[1]
    return {
        "input_ids": padded["input_ids"],
        "attention_mask": padded["attention_mask"],
        "last": torch.arange(len(sequences)) * width + lengths - 1,
    }


def collate_pairs(
    pairs: list[TokenizedPair[list[int]]], pad_token_id: int, pack_length: int = 0, share_prefix: bool = False
) -> dict[str, torch.Tensor]:
    """Chosen sequences then rejected ones in one layout (see :func:`sequence_layout`): one forward for
    both sides of every pair; with ``share_prefix``, each prompt and each repeated response computed once."""
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    groups = [p.prompt_id for p in pairs] * 2
    return {
        **sequence_layout(sequences, groups, pad_token_id, pack_length, share_prefix),
        **pair_fields(pairs),
    }


def pair_fields(pairs: list[TokenizedPair[list[int]]]) -> dict[str, torch.Tensor]:
    """margin, has_margin and weight (P,) of ``pairs``."""
    return {
        "margin": torch.tensor([p.margin or 0.0 for p in pairs]),
        "has_margin": torch.tensor([p.margin is not None for p in pairs]),
        "weight": torch.tensor([p.weight for p in pairs]),
    }


def pair_rewards(module: ScalarReward, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(r(x, y_w), r(x, y_l)), each (P,), of a :func:`collate_pairs` batch."""
    rewards = module(
        batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"), batch.get("last")
    )  # (2P,)
    return rewards.chunk(2)


def pair_losses(
    chosen: torch.Tensor, rejected: torch.Tensor, batch: dict[str, torch.Tensor], center_coef: float
) -> tuple[torch.Tensor, dict]:
    """Per-pair Bradley–Terry losses (P,), unweighted, and the batch's metrics."""
    margin = torch.where(batch["has_margin"], batch["margin"], torch.zeros_like(batch["margin"]))
    return bradley_terry_loss(chosen, rejected, margin=margin, center_coef=center_coef)


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
    share_prefix = shares_prefixes(model)

    def collate(pairs: list[TokenizedPair[list[int]]]) -> dict[str, torch.Tensor]:
        return collate_pairs(pairs, tokenizer.pad_token_id, config.pack_length, share_prefix)

    def loss_fn(module: ScalarReward, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        chosen, rejected = pair_rewards(module, batch)
        losses, metrics = pair_losses(chosen, rejected, batch, config.center_coef)
        return (losses * batch["weight"]).sum(), metrics

    final: dict[str, Any] = {}

    def evaluate(module: torch.nn.Module) -> dict[str, float]:
        """One pass over the held-out pairs gives both the logged eval/ metrics and eval.json's."""
        chosen, rejected = held_out_rewards(module, held_out, collate, config.eval_batch_size)
        final.clear()
        final.update(pairwise_metrics(chosen, rejected))
        batch = pair_fields(held_out)
        losses, metrics = pair_losses(chosen, rejected, batch, config.center_coef)
        row = {"eval/loss": float((losses * batch["weight"]).sum() / batch["weight"].sum())}
        row.update({f"eval/{key}": float(value) for key, value in metrics.items()})
        return row

    trainer = Trainer(
        config,
        ScalarReward(model),
        train,
        collate,
        loss_fn=loss_fn,
        count_fn=lambda batch: float(batch["weight"].sum()),
        eval_data=held_out,
        groups=[p.prompt_id for p in train] if config.group_by_prompt else None,
        evaluate_fn=evaluate,
    )
    trainer.fit()  # its final evaluation fills ``final``
    if trainer.accelerator.is_main_process:
        Path(config.output_dir, "eval.json").write_text(json.dumps(final, indent=2), encoding="utf-8")
    finish(trainer, trainer.unwrapped().model, tokenizer, config)  # last: marks the stage done
    return final


@torch.no_grad()
def held_out_rewards(
    module: torch.nn.Module,
    pairs: list[TokenizedPair[list[int]]],
    collate: Any,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards (P,) of the chosen and rejected responses of ``pairs``, in their order. The pairs are
    visited prompt by prompt, so a ranking's pairs share batches: with a shared-prefix ``collate``, its
    prompt and each of its responses are computed once."""
    was_training = module.training
    module.eval()
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].prompt_id)
    device = next(module.parameters()).device
    chosen, rejected = torch.zeros(len(pairs)), torch.zeros(len(pairs))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate([pairs[i] for i in chunk]).items()}
        c, r = pair_rewards(module, batch)
        chosen[chunk], rejected[chunk] = c.float().cpu(), r.float().cpu()
    module.train(was_training)
    return chosen, rejected


def evaluate_pairs(
    module: ScalarReward,
    pairs: list[TokenizedPair[list[int]]],
    pad_token_id: int,
    batch_size: int = 32,
    pack_length: int = 128,
) -> dict:
    """Pairwise accuracy, BT NLL, calibration and reward statistics on tokenised held-out pairs."""
    if not pairs:
        return {}
    share_prefix = shares_prefixes(module.model)
    chosen, rejected = held_out_rewards(
        module,
        pairs,
        lambda chunk: collate_pairs(chunk, pad_token_id, pack_length, share_prefix),
        batch_size,
    )
    return pairwise_metrics(chosen, rejected)
