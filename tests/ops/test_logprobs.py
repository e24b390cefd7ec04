import math

import torch

from tether.ops import (
    entropy_from_logits,
    gather_logprobs,
    logprobs_and_entropy,
    masked_mean,
    masked_var,
    masked_whiten,
    shift_labels,
)
from tether.ops.logprobs import IGNORE_INDEX

# exp of these logits is (1, 2, 3): probabilities 1/6, 2/6, 3/6.
LOGITS = torch.tensor([0.0, math.log(2.0), math.log(3.0)])


def test_gather_logprobs_hand_worked():
    logits = LOGITS.expand(2, 3, 3)  # (B=2, T=3, V=3)
    labels = torch.tensor([[0, 1, 2], [2, IGNORE_INDEX, 1]])
    expected = torch.tensor(
        [[math.log(1 / 6), math.log(2 / 6), math.log(3 / 6)], [math.log(3 / 6), 0.0, math.log(2 / 6)]]
    )
    got = gather_logprobs(logits, labels, chunk_size=2)  # chunks smaller than the 6 rows
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


def test_gather_logprobs_temperature_and_half_precision():
    # At temperature 2 the logits halve: exp(z/2) = (1, √2, √3).
    z = torch.tensor([1.0, math.sqrt(2.0), math.sqrt(3.0)])
    expected = math.log(math.sqrt(3.0) / z.sum().item())
    got = gather_logprobs(LOGITS.to(torch.bfloat16)[None], torch.tensor([2]), temperature=2.0)
    assert abs(got.item() - expected) < 1e-2  # bf16 logits, fp32 arithmetic


def test_entropy_hand_worked():
    p = [1 / 6, 2 / 6, 3 / 6]
    expected = -sum(q * math.log(q) for q in p)
    assert abs(entropy_from_logits(LOGITS).item() - expected) < 1e-6
    assert abs(entropy_from_logits(torch.zeros(4)).item() - math.log(4)) < 1e-6  # uniform: log V


def test_logprobs_and_entropy_from_one_log_softmax():
    p = [1 / 6, 2 / 6, 3 / 6]
    picked, entropy = logprobs_and_entropy(LOGITS.expand(3, 3), torch.tensor([0, 1, 2]))
    torch.testing.assert_close(picked, torch.tensor([math.log(q) for q in p]))
    torch.testing.assert_close(entropy, torch.full((3,), -sum(q * math.log(q) for q in p)))
    # At temperature 2, the same values as the two separate functions, gradients included.
    logits = torch.randn(5, 7, requires_grad=True)
    labels = torch.tensor([0, 6, 3, 3, 1])
    picked, entropy = logprobs_and_entropy(logits, labels, temperature=2.0)
    torch.testing.assert_close(picked, gather_logprobs(logits, labels, temperature=2.0))
    torch.testing.assert_close(entropy, entropy_from_logits(logits, temperature=2.0))
    ours = torch.autograd.grad((picked + 0.3 * entropy).sum(), logits)[0]
    theirs = torch.autograd.grad(
        (gather_logprobs(logits, labels, 2.0) + 0.3 * entropy_from_logits(logits, 2.0)).sum(), logits
    )[0]
    torch.testing.assert_close(ours, theirs)


def test_shift_labels():
    ids = torch.tensor([[5, 6, 7, 8]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 7, 8]])
    assert shift_labels(ids).tolist() == [[6, 7, 8, IGNORE_INDEX]]
    assert shift_labels(ids, labels).tolist() == [[IGNORE_INDEX, 7, 8, IGNORE_INDEX]]


def test_masked_statistics_hand_worked():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    assert masked_mean(values, mask).item() == 2.5  # (1+2+3+4)/4
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([1.5, 3.5]))
    # Squared deviations 2.25+0.25+0.25+2.25 = 5; unbiased: 5/3.
    assert abs(masked_var(values, mask).item() - 5 / 3) < 1e-6
    whitened = masked_whiten(values, mask)
    assert whitened[0, 2] == 0 and whitened[1, 2] == 0
    assert abs(masked_mean(whitened, mask).item()) < 1e-6
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0  # empty mask: no division by zero
