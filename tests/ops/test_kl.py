"""KL estimators k1/k2/k3 against the exact KL of small categorical distributions.

E_{y~π}[k(y)] is computed by enumeration: Σ_y π(y)·k(log π(y), log π_ref(y)). With ℓ = log π − log π_ref,
E_π[ℓ] = KL(π‖π_ref) and E_π[exp(−ℓ) − 1 + ℓ] = Σ π_ref − 1 + KL = KL, so k1 and k3 are exact in
expectation; k2 = ℓ²/2 matches KL to second order when π_ref is close to π.
"""

from __future__ import annotations

import pytest
import torch

from tether.ops import kl_estimate


def _distributions(
    seed: int, scale: float, rows: int = 8, vocab: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π and log π_ref (rows, V): π_ref's logits are π's plus noise of size ``scale``."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=generator, dtype=torch.float64)
    ref_logits = logits + scale * torch.randn(rows, vocab, generator=generator, dtype=torch.float64)
    return torch.log_softmax(logits, dim=-1), torch.log_softmax(ref_logits, dim=-1)


def _expected_under_policy(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str
) -> torch.Tensor:
    """E_{y~π}[k(y)] by enumerating the vocabulary. (rows, V) -> (rows,)."""
    estimates = kl_estimate(logprobs, ref_logprobs, estimator).double()
    return (logprobs.exp() * estimates).sum(-1)


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0])
@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_k1_and_k3_are_exact_in_expectation(estimator: str, scale: float) -> None:
    logprobs, ref_logprobs = _distributions(seed=0, scale=scale)
    exact = (logprobs.exp() * (logprobs - ref_logprobs)).sum(-1)
    torch.testing.assert_close(
        _expected_under_policy(logprobs, ref_logprobs, estimator), exact, rtol=1e-5, atol=1e-6
    )


def test_k2_is_close_for_nearby_distributions() -> None:
    logprobs, ref_logprobs = _distributions(seed=1, scale=0.05)
    exact = (logprobs.exp() * (logprobs - ref_logprobs)).sum(-1)
    # KL − E[ℓ²/2] = O(ℓ³): a relative gap of a few percent at this distance.
    torch.testing.assert_close(
        _expected_under_policy(logprobs, ref_logprobs, "k2"), exact, rtol=0.1, atol=1e-8
    )


def test_k2_and_k3_never_negative_k1_can_be() -> None:
    generator = torch.Generator().manual_seed(2)
    log_ratio = torch.cat([torch.randn(10_000, generator=generator) * 5.0, torch.tensor([0.0, 1e-8, -1e-8])])
    zeros = torch.zeros_like(log_ratio)
    assert torch.all(kl_estimate(log_ratio, zeros, "k3") >= 0)
    assert torch.all(kl_estimate(log_ratio, zeros, "k2") >= 0)
    assert torch.any(kl_estimate(log_ratio, zeros, "k1") < 0)


def test_hand_worked_values_and_unknown_estimator() -> None:
    # ℓ = log 2: k1 = 0.6931, k2 = ℓ²/2 = 0.2402, k3 = 1/2 − 1 + ℓ = 0.1931.
    logprobs = torch.tensor([0.0])
    ref_logprobs = torch.log(torch.tensor([0.5]))
    assert kl_estimate(logprobs, ref_logprobs, "k1").item() == pytest.approx(0.693147, rel=1e-5)
    assert kl_estimate(logprobs, ref_logprobs, "k2").item() == pytest.approx(0.240227, rel=1e-5)
    assert kl_estimate(logprobs, ref_logprobs, "k3").item() == pytest.approx(0.193147, rel=1e-5)
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logprobs, ref_logprobs, "k4")
