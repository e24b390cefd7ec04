import math

import torch

from tether.losses.lm import causal_lm_loss, nll_loss
from tether.ops.logprobs import IGNORE_INDEX


def test_causal_lm_loss_hand_worked():
    # Every position predicts with probabilities (1/6, 2/6, 3/6) over a 3-token vocabulary.
    logits = torch.tensor([0.0, math.log(2.0), math.log(3.0)]).expand(1, 4, 3)
    input_ids = torch.tensor([[0, 2, 1, 0]])
    # Targets are tokens 1..3 = (2, 1, 0): NLL = −[log(3/6) + log(2/6) + log(1/6)] / 3.
    expected = -(math.log(3 / 6) + math.log(2 / 6) + math.log(1 / 6)) / 3
    assert abs(causal_lm_loss(logits, input_ids).item() - expected) < 1e-6
    # Response-only labels: only the last target (token 0, p = 1/6) carries loss.
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 0]])
    assert abs(causal_lm_loss(logits, input_ids, labels).item() - math.log(6)) < 1e-6


def test_nll_loss_sums_per_example():
    logprobs = torch.tensor([[-1.0, -2.0, -4.0], [-0.5, -0.25, -8.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    nll_sum, n_tokens, metrics = nll_loss(logprobs, mask)
    assert nll_sum.tolist() == [3.0, 0.5]
    assert n_tokens.tolist() == [2.0, 1.0]
    assert metrics["tokens"].item() == 3.0
