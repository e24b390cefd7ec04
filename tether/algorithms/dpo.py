"""Direct preference optimisation and its family: optimise the policy on preference pairs directly,
with no reward model and no sampling (Rafailov et al. 2023).

pairs (x, y_w, y_l) → log π_ref(y|x) computed once and cached → per step, log π_θ(y_w|x) and log π_θ(y_l|x)
in one padding-free forward → a loss of ``losses/preference.py`` (DPO: −log σ(β·[(log π_θ − log π_ref)(y_w)
− (log π_θ − log π_ref)(y_l)])) → AdamW. Reference-free losses (SimPO, ORPO, CPO) skip the reference.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from tether import TetherError
from tether.algorithms.common import finish, load_policy
from tether.algorithms.offline import (
    cache_reference_logprobs,
    sequence_batch,
    sequence_logps,
    split_records,
)
from tether.config import ConfigError, DPOConfig, OnlineDPOConfig
from tether.data.preference import PreferencePair, load_pairs, response_example
from tether.data.tokenize import TokenizedExample, TokenizedPair, tokenize_sft
from tether.engine import Trainer
from tether.losses.preference import PREFERENCE_LOSSES, combined_preference_loss
from tether.models import TokenLogProbs, load_causal_lm
from tether.models.forward import shares_prefixes
from tether.ops.logprobs import IGNORE_INDEX
from tether.specs import load_records


def parse_loss_spec(spec: str) -> dict[str, float]:
    """'dpo' → {'dpo': 1.0}; 'dpo:1,nll:0.2' → {'dpo': 1.0, 'nll': 0.2}."""
    terms: dict[str, float] = {}
    for part in spec.split(","):
        name, _, weight = part.strip().partition(":")
        if name not in PREFERENCE_LOSSES:
            raise ConfigError(
                f"field 'loss': unknown loss '{name}'; choose from {', '.join(sorted(PREFERENCE_LOSSES))}"
            )
        try:
            terms[name] = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(f"field 'loss': weight of '{name}' is not a number: {weight!r}") from None
    return terms


def uses_reference(terms: dict[str, float]) -> bool:
    return any("ref_chosen_logps" in inspect.signature(PREFERENCE_LOSSES[name]).parameters for name in terms)


def tokenize_pair(
    tokenizer: object, pair: PreferencePair, max_length: int
) -> TokenizedPair[TokenizedExample] | None:
    """Chosen and rejected conversations with labels on the response only; None if truncation empties one."""
    sides = [
        tokenize_sft(tokenizer, response_example(pair.prompt, response, pair.where), max_length)
        for response in (pair.chosen, pair.rejected)
    ]
    if None in sides:
        return None
    return TokenizedPair(sides[0], sides[1], pair.weight)


def collate_pairs(
    pairs: list[TokenizedPair[TokenizedExample]],
    pad_token_id: int,
    pack_length: int,
    share_prefix: bool = False,
) -> dict[str, torch.Tensor]:
    """Chosen sequences then rejected ones, packed together: one forward for both sides of every pair,
    each prompt computed once (``share_prefix``)."""
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    batch = sequence_batch(sequences, pad_token_id, pack_length, share_prefix)
    return {
        **batch,
        "ref_chosen": torch.tensor([p.ref_chosen for p in pairs]),
        "ref_rejected": torch.tensor([p.ref_rejected for p in pairs]),
        "weight": torch.tensor([p.weight for p in pairs]),
    }


def prompt_groups(examples: list[TokenizedExample]) -> list[int]:
    """A group id per example: equal for examples whose tokens before the first labelled one agree."""
    ids: dict[tuple[int, ...], int] = {}
    groups = []
    for example in examples:
        first = next((t for t, label in enumerate(example.labels) if label != IGNORE_INDEX), len(example))
        groups.append(ids.setdefault(tuple(example.input_ids[:first]), len(ids)))
    return groups


def loss_settings(config: DPOConfig | OnlineDPOConfig) -> dict[str, float]:
    """The preference losses' hyper-parameters the user set; an unset one (None) is left to each loss's
    own paper default (β = 0.1 for DPO, 2.0 for SimPO; SimPO's γ = 1.0; ORPO's λ = 0.1)."""
    settings = {
        "beta": config.beta,
        "gamma": config.gamma,
        "orpo_lambda": config.orpo_lambda,
        "label_smoothing": config.label_smoothing,
    }
    return {name: value for name, value in settings.items() if value is not None}


def pair_loss_fn(
    terms: dict[str, float], settings: dict[str, float], with_reference: bool
) -> Callable[[TokenLogProbs, dict[str, torch.Tensor]], tuple[torch.Tensor, dict]]:
    """The Trainer's ``loss_fn`` for :func:`collate_pairs` batches: summed log-probs of both sides in one
    forward, the weighted mix ``terms`` of preference losses (``settings``: their hyper-parameters; the
    cached reference log-probs when ``with_reference``), each pair's loss times its weight, summed."""

    def loss_fn(module: TokenLogProbs, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        n = batch["weight"].shape[0]
        logprobs, lengths = sequence_logps(module, batch, 2 * n)
        losses, metrics = combined_preference_loss(
            terms,
            policy_chosen_logps=logprobs[:n],
            policy_rejected_logps=logprobs[n:],
            ref_chosen_logps=batch["ref_chosen"] if with_reference else None,
            ref_rejected_logps=batch["ref_rejected"] if with_reference else None,
            chosen_lengths=lengths[:n],
            rejected_lengths=lengths[n:],
            **settings,
        )
        metrics["logps/chosen"] = logprobs[:n].detach().mean()
        metrics["logps/rejected"] = logprobs[n:].detach().mean()
        return (losses * batch["weight"]).sum(), metrics

    return loss_fn


def run_dpo(config: DPOConfig) -> dict[str, float]:
    """Run the DPO-family stage; returns the final held-out metrics."""
    terms = parse_loss_spec(config.loss)
    train_records, eval_records = split_records(
        load_records(config.data, "preferences", config.seed), config.eval_fraction, config.seed
    )
    train_pairs, eval_pairs = load_pairs(train_records), load_pairs(eval_records) if eval_records else []

    model, tokenizer = load_policy(config)
    train = [
        t for t in (tokenize_pair(tokenizer, p, config.max_length) for p in train_pairs) if t is not None
    ]
    held_out = [
        t for t in (tokenize_pair(tokenizer, p, config.max_length) for p in eval_pairs) if t is not None
    ]
    if not train:
        raise TetherError(f"{config.data}: no pair fits max_length={config.max_length}")
    mean_weight = sum(p.weight for p in train) / len(train)  # rankings weigh pairs 1/#pairs; average 1
    for pair in train + held_out:
        pair.weight /= mean_weight

    with_reference = uses_reference(terms)
    if with_reference:
        ref_model = load_causal_lm(config.ref_model, config.trust_remote_code) if config.ref_model else None
        cache_reference_logprobs(
            model,
            ref_model,
            (train, held_out),
            ("chosen", "rejected"),
            tokenizer.pad_token_id,
            config.pack_length,
            config.eval_batch_size,
        )
        del ref_model

    loss_fn = pair_loss_fn(terms, loss_settings(config), with_reference)

    trainer = Trainer(
        config,
        TokenLogProbs(model),
        train,
        lambda pairs: collate_pairs(
            pairs, tokenizer.pad_token_id, config.pack_length, shares_prefixes(model)
        ),
        loss_fn=loss_fn,
        count_fn=lambda batch: float(batch["weight"].sum()),
        eval_data=held_out,
        groups=prompt_groups([p.chosen for p in train]) if config.group_by_prompt else None,
    )
    metrics = trainer.fit()
    finish(trainer, trainer.unwrapped().model, tokenizer, config)
    return metrics
