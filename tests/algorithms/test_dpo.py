"""The DPO stage's pieces on a tiny model: the gradient is the lecture's, the cached reference is exact,
LoRA's reference is the base model, and packing changes nothing but the cost."""

import copy
import math

import pytest
import torch

from tether.algorithms.dpo import collate_pairs, parse_loss_spec, tokenize_pair, uses_reference
from tether.algorithms.offline import reference_logps, reference_of, sequence_batch, sequence_logps
from tether.config import ConfigError
from tether.data.preference import PreferencePair
from tether.losses.preference import get_preference_loss
from tether.models import TokenLogProbs, apply_lora

PAIRS = [
    PreferencePair(
        "review the phone.", "the phone is great. the screen is superb.", "the phone is poor.", "t:1"
    ),
    PreferencePair(
        "review the lid.", "the lid is lovely.", "honestly the lid was awful. overall it is bad.", "t:2"
    ),
]


@pytest.fixture
def pairs(tokenizer):
    return [tokenize_pair(tokenizer, p, 128) for p in PAIRS]


def alone_logp(model, example):
    """log π(y|x) of one sequence on its own (no packing, no padding)."""
    batch = sequence_batch([example], 0, pack_length=0)
    return sequence_logps(TokenLogProbs(model), batch, 1)[0][0]


@pytest.mark.parametrize(("pack_length", "share_prefix"), [(0, False), (64, False), (64, True), (512, True)])
def test_packed_logps_equal_one_by_one(make_model, pairs, tokenizer, pack_length, share_prefix):
    model = make_model()
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    batch = sequence_batch(sequences, tokenizer.pad_token_id, pack_length, share_prefix)
    logps, lengths = sequence_logps(TokenLogProbs(model), batch, len(sequences))
    expected = torch.stack([alone_logp(model, s) for s in sequences])
    torch.testing.assert_close(logps, expected, atol=1e-4, rtol=1e-5)
    assert lengths.tolist() == [sum(label != -100 for label in s.labels[1:]) for s in sequences]


def test_dpo_gradient_is_the_lectures_form(make_model, pairs, tokenizer):
    beta = 0.5
    model, reference = make_model(seed=0), make_model(seed=1)
    pair = pairs[0]
    ref_w, ref_l = alone_logp(reference, pair.chosen).detach(), alone_logp(reference, pair.rejected).detach()

    # Autograd through the stage's path: one packed forward, the registered loss.
    pair.ref_chosen, pair.ref_rejected = float(ref_w), float(ref_l)
    batch = collate_pairs([pair], tokenizer.pad_token_id, pack_length=512, share_prefix=True)
    logps, _ = sequence_logps(TokenLogProbs(model), batch, 2)
    loss, _ = get_preference_loss("dpo")(
        policy_chosen_logps=logps[:1],
        policy_rejected_logps=logps[1:],
        ref_chosen_logps=batch["ref_chosen"],
        ref_rejected_logps=batch["ref_rejected"],
        beta=beta,
    )
    autograd = torch.autograd.grad(loss.sum(), list(model.parameters()))

    # The lecture: ∇L = −β·σ(r̂_l − r̂_w)·(∇log π(y_w|x) − ∇log π(y_l|x)), r̂ = β·(log π − log π_ref).
    logp_w, logp_l = alone_logp(model, pair.chosen), alone_logp(model, pair.rejected)
    grad_w = torch.autograd.grad(logp_w, list(model.parameters()))
    grad_l = torch.autograd.grad(logp_l, list(model.parameters()))
    reward_w, reward_l = beta * (logp_w.detach() - ref_w), beta * (logp_l.detach() - ref_l)
    scale = -beta * torch.sigmoid(reward_l - reward_w)
    assert abs(float(scale)) > 1e-3
    for got, gw, gl in zip(autograd, grad_w, grad_l):
        torch.testing.assert_close(got, scale * (gw - gl), atol=1e-6, rtol=1e-4)


def test_cached_reference_equals_recomputed(make_model, pairs, tokenizer):
    model = make_model()
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    cached = reference_logps(model, sequences, tokenizer.pad_token_id, pack_length=128, batch_size=3)
    assert cached == pytest.approx([alone_logp(model, s).item() for s in sequences], abs=1e-4)


def test_lora_reference_is_the_base_model(make_model, pairs, tokenizer):
    base = make_model()
    lora = apply_lora(copy.deepcopy(base), r=4, alpha=8)
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    sequences = [p.chosen for p in pairs]
    expected = [alone_logp(base, s).item() for s in sequences]
    with reference_of(lora, None) as reference:
        assert reference is lora  # no second copy in memory
        assert reference_logps(reference, sequences, tokenizer.pad_token_id, 128) == pytest.approx(
            expected, abs=1e-4
        )
    adapted = reference_logps(lora, sequences, tokenizer.pad_token_id, 128)
    assert all(abs(a - e) > 1e-3 for a, e in zip(adapted, expected))  # adapters back on afterwards


def test_loss_spec():
    assert parse_loss_spec("dpo") == {"dpo": 1.0}
    assert parse_loss_spec("dpo:1, nll:0.2") == {"dpo": 1.0, "nll": 0.2}
    assert uses_reference({"dpo": 1.0}) and not uses_reference({"simpo": 1.0})
    with pytest.raises(ConfigError, match="unknown loss 'dpx'"):
        parse_loss_spec("dpx")


def test_each_loss_gets_its_papers_defaults_unless_set():
    # SimPO (Meng et al. 2024): β = 2, γ = 1 (γ/β = 0.5), not DPO's β = 0.1 with γ = 1 (γ/β = 10).
    from tether.algorithms.dpo import loss_settings
    from tether.config import DPOConfig, OnlineDPOConfig
    from tether.losses.preference import combined_preference_loss

    chosen, rejected, lengths = torch.tensor([-4.0]), torch.tensor([-6.0]), torch.tensor([2.0])

    def loss(config, name):
        value, _ = combined_preference_loss(
            {name: 1.0},
            policy_chosen_logps=chosen,
            policy_rejected_logps=rejected,
            chosen_lengths=lengths,
            rejected_lengths=lengths,
            **loss_settings(config),
        )
        return float(value)

    # β·(−4/2) − β·(−6/2) − γ = 2·1 − 1 = 1 → −log σ(1) = 0.31326.
    assert loss(DPOConfig(loss="simpo"), "simpo") == pytest.approx(0.313262, abs=1e-6)
    assert loss(OnlineDPOConfig(loss="simpo"), "simpo") == pytest.approx(0.313262, abs=1e-6)
    # Set by the user, they win: β = 0.5, γ = 0.25 → 0.5 − 0.25 = 0.25 → −log σ(0.25) = log(1 + e^−0.25) = 0.575939.
    assert loss(DPOConfig(loss="simpo", beta=0.5, gamma=0.25), "simpo") == pytest.approx(0.575939, abs=1e-6)
    # ORPO's λ can be set: NLL of the mean log-prob (2.0) + λ · −log σ(log-odds gap).
    odds = lambda mean: mean - math.log1p(-math.exp(mean))  # noqa: E731
    ratio = -math.log(1 / (1 + math.exp(-(odds(-2.0) - odds(-3.0)))))
    for lam in (0.1, 1.5):
        config = DPOConfig(loss="orpo") if lam == 0.1 else DPOConfig(loss="orpo", orpo_lambda=lam)
        assert loss(config, "orpo") == pytest.approx(2.0 + lam * ratio, rel=1e-5)
    assert loss_settings(DPOConfig()) == {"label_smoothing": 0.0}
