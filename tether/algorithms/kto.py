"""KTO: align on unpaired feedback — each completion thumbs-up or thumbs-down on its own
(Ethayarajh et al. 2024).

examples (x, y, desirable?) → mismatched pairs (x_i, y_j) for KTO's reference point z_ref → log π_ref of
both computed once and cached → per step, log π_θ of the examples (with gradient) and of the mismatched
pairs (without: z_ref is detached) in one packed forward each → ``losses/unpaired.kto_loss``.
Rankings are read as unpaired data: the best completion of each prompt up, the worst down.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from tether import TetherError
from tether.algorithms.common import finish, load_policy
from tether.algorithms.offline import (
    cache_reference_logprobs,
    sequence_batch,
    sequence_logps,
    split_records,
)
from tether.config import KTOConfig
from tether.data.preference import UnpairedExample, parse_unpaired, response_example
from tether.data.readers import Record
from tether.data.tokenize import TokenizedExample, tokenize_sft
from tether.engine import Trainer
from tether.losses.unpaired import kto_loss
from tether.models import TokenLogProbs
from tether.models.forward import shares_prefixes
from tether.specs import load_records


def unpaired_examples(records: list[Record]) -> list[UnpairedExample]:
    """Thumbs records as they are; ranking records as their best (up) and worst (down) completions."""
    examples = []
    for record in records:
        if "ranks" in record.data:
            ranks, completions = record.data["ranks"], record.data.get("completions") or []
            if len(set(ranks)) < 2 or len(completions) != len(ranks):
                continue  # all tied (or malformed: parse_preference reports it elsewhere)
            best, worst = ranks.index(min(ranks)), ranks.index(max(ranks))
            prompt = record.data["prompt"]
            examples.append(UnpairedExample(prompt, completions[best], True, record.where))
            examples.append(UnpairedExample(prompt, completions[worst], False, record.where))
        else:
            examples.append(parse_unpaired(record))
    return examples


@dataclass
class TokenizedUnpaired:
    example: TokenizedExample
    mismatched: TokenizedExample  # this prompt with another example's completion
    desirable: bool
    ref_example: float = 0.0  # log π_ref of each, cached by offline.cache_reference_logprobs
    ref_mismatched: float = 0.0


def tokenize_unpaired(
    tokenizer: object, examples: list[UnpairedExample], max_length: int, seed: int
) -> list[TokenizedUnpaired]:
    """Tokenise each example and pair its prompt with the completion of a random other example."""
    shift = list(range(len(examples)))
    random.Random(seed).shuffle(shift)
    partner = {shift[i]: shift[(i + 1) % len(shift)] for i in range(len(shift))}  # a cycle: never itself
    out = []
    for i, example in enumerate(examples):
        other = examples[partner[i]]
        own = tokenize_sft(
            tokenizer, response_example(example.prompt, example.completion, example.where), max_length
        )
        mismatched = tokenize_sft(
            tokenizer, response_example(example.prompt, other.completion, example.where), max_length
        )
        if own is not None and mismatched is not None:
            out.append(TokenizedUnpaired(own, mismatched, example.label))
    return out


def run_kto(config: KTOConfig) -> dict[str, float]:
    """Run the KTO stage; returns the final held-out metrics."""
    train_records, eval_records = split_records(
        load_records(config.data, "preferences", config.seed), config.eval_fraction, config.seed
    )
    train_examples, eval_examples = unpaired_examples(train_records), unpaired_examples(eval_records)
    if len(train_examples) < 2:
        raise TetherError(f"{config.data}: KTO needs at least 2 labelled examples")
    model, tokenizer = load_policy(config)
    train = tokenize_unpaired(tokenizer, train_examples, config.max_length, config.seed)
    held_out = (
        tokenize_unpaired(tokenizer, eval_examples, config.max_length, config.seed)
        if len(eval_examples) > 1
        else []
    )

    cache_reference_logprobs(
        model,
        None,
        (train, held_out),
        ("example", "mismatched"),
        tokenizer.pad_token_id,
        config.pack_length,
        config.eval_batch_size,
    )

    def collate(items: list[TokenizedUnpaired]) -> dict[str, torch.Tensor]:
        share = shares_prefixes(model)
        own = sequence_batch([t.example for t in items], tokenizer.pad_token_id, config.pack_length, share)
        mismatched = sequence_batch(
            [t.mismatched for t in items], tokenizer.pad_token_id, config.pack_length, share
        )
        return {
            **own,
            **{f"kl_{k}": v for k, v in mismatched.items()},
            "ref": torch.tensor([t.ref_example for t in items]),
            "ref_kl": torch.tensor([t.ref_mismatched for t in items]),
            "desirable": torch.tensor([t.desirable for t in items]),
        }

    def loss_fn(module: TokenLogProbs, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        n = batch["ref"].shape[0]
        logprobs, _ = sequence_logps(module, batch, n)
        with torch.no_grad():
            kl_batch = {k.removeprefix("kl_"): v for k, v in batch.items() if k.startswith("kl_")}
            kl_logprobs, _ = sequence_logps(module, kl_batch, n)
        losses, metrics = kto_loss(
            policy_logps=logprobs,
            ref_logps=batch["ref"],
            labels=batch["desirable"],
            policy_kl_logps=kl_logprobs,
            ref_kl_logps=batch["ref_kl"],
            beta=config.beta,
            desirable_weight=config.desirable_weight,
            undesirable_weight=config.undesirable_weight,
        )
        return losses.sum(), metrics

    trainer = Trainer(
        config,
        TokenLogProbs(model),
        train,
        collate,
        loss_fn=loss_fn,
        count_fn=lambda batch: int(batch["ref"].shape[0]),
        eval_data=held_out,
    )
    metrics = trainer.fit()
    finish(trainer, trainer.unwrapped().model, tokenizer, config)
    return metrics
