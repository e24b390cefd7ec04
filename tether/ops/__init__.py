"""Pure tensor helpers (layer 1). Letters: B batch, T sequence, A response tokens, V vocab."""

from tether.ops.kl import kl_estimate
from tether.ops.logprobs import entropy_from_logits, gather_logprobs, logprobs_and_entropy, shift_labels
from tether.ops.masked import masked_mean, masked_sum, masked_var, masked_whiten

__all__ = [
    "entropy_from_logits",
    "gather_logprobs",
    "kl_estimate",
    "logprobs_and_entropy",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "shift_labels",
]
