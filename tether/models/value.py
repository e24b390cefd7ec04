"""The policy with a value function, as the lecture designs it: a linear layer on the policy's hidden
states, V(s_t) = w·h_t (trained by MSE to the returns) — or, by config, a separate critic: a copy of the
backbone with its own linear head.

One forward gives everything an online step needs at the response positions: log π(a_t|s_t), the entropy
of π(·|s_t), and V(s_t). Logits are computed only at the response positions.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from tether.models.forward import _base_model, attention_mask_for
from tether.ops.logprobs import IGNORE_INDEX, logprobs_and_entropy, shift_labels

VALUE_MODES = ("none", "head", "model")


class PolicyValue(nn.Module):
    """``policy`` (a causal LM, LoRA or not) plus an optional value function (``value_mode``)."""

    def __init__(self, policy: Any, value_mode: str = "head") -> None:
        super().__init__()
        if value_mode not in VALUE_MODES:
            raise ValueError(f"unknown value mode {value_mode!r}; choose one of {VALUE_MODES}")
        self.policy, self.value_mode = policy, value_mode
        base = _base_model(policy)
        hidden = base.config.hidden_size
        self.critic = copy.deepcopy(base.get_decoder()) if value_mode == "model" else None
        if self.critic is not None:
            self.critic.requires_grad_(True)  # the copy of a LoRA-frozen backbone still learns
        self.value_head = nn.Linear(hidden, 1) if value_mode != "none" else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        temperature: float = 1.0,
    ) -> dict[str, torch.Tensor | None]:
        """(N, T) inputs → ``logprobs`` (N, T) of label tokens (column t scores token t+1), ``entropy``
        (N, T) of π(·|s_t) there, and ``values`` (N, T) V(s_t) (None without a value function)."""
        base = _base_model(self.policy)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask_for(base, attention_mask),
            "position_ids": position_ids,
            "use_cache": False,
        }
        hidden = base.get_decoder()(**inputs).last_hidden_state  # (N, T, D)
        targets = shift_labels(input_ids, labels)
        selected = targets != IGNORE_INDEX
        logits = base.get_output_embeddings()(hidden[selected])  # (K, V)
        logprobs = torch.zeros(targets.shape, device=hidden.device)
        entropy = torch.zeros(targets.shape, device=hidden.device)
        logprobs[selected], entropy[selected] = logprobs_and_entropy(logits, targets[selected], temperature)
        values = None
        if self.value_head is not None:
            value_hidden = hidden if self.critic is None else self.critic(**inputs).last_hidden_state
            values = self.value_head(value_hidden).squeeze(-1).float()  # (N, T)
        return {"logprobs": logprobs, "entropy": entropy, "values": values}
