"""The reward model: the LM with its unembedding replaced by a scalar head.

r(x, y) = w · h_last, where h_last is the final hidden state of the last real (non-padding) token of the
rendered (prompt, response). The model is a Hugging Face ``…ForSequenceClassification`` with one label, so
plain ``AutoModelForSequenceClassification.from_pretrained`` loads a saved reward model; but tether reads
the last real token from the attention mask, not from the pad id — which also works when the pad token is
the end-of-turn token (SmolLM2) and under left or right padding alike.

Only the backbone runs (no vocabulary logits anywhere), and the head reads one hidden state per sequence.
Training passes packed or shared-prefix layouts (``data/packing.py``) with ``last``: where each sequence's
last token sits in the flattened layout, so many sequences share rows and a prompt is computed once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tether import TetherError
from tether.models.forward import attention_mask_for
from tether.models.load import load_causal_lm, resolve_model


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask → (B,) index of the last 1 in each row (works for left and right padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(-1)


def backbone_of(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix)


def head_of(model: Any) -> nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.score


class ScalarReward(nn.Module):
    """Forward: token rows (R, L) → one reward per sequence. The module handed to Accelerate."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None = None,
        last: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rewards (N,), fp32.

        Padded rows (B, T) with their 2-D ``attention_mask``: one sequence per row, N = B. A layout of
        many sequences per row passes ``position_ids`` (R, L), its mask (a (R, 1, L, L) boolean one for a
        shared-prefix layout, None for position-id packing) and ``last`` (N,): the flat position
        (row · L + column) of each sequence's last token.
        """
        output = backbone_of(self.model)(
            input_ids=input_ids,
            attention_mask=attention_mask_for(self.model, attention_mask),
            position_ids=position_ids,
            use_cache=False,
        )
        hidden = output.last_hidden_state  # (R, L, D)
        if last is None:
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            last = rows * hidden.shape[1] + last_token_index(attention_mask)
        picked = hidden.reshape(-1, hidden.shape[-1])[last]  # (N, D)
        return head_of(self.model)(picked).squeeze(-1).float()  # (N,)


def reward_model_from_lm(spec: str, trust_remote_code: bool = False, seed: int = 0) -> Any:
    """A one-label sequence classifier whose backbone is the causal LM named by ``spec`` (a HF folder,
    GGUF or 'smollm2'); the scalar head starts at small random weights."""
    from transformers import AutoModelForSequenceClassification

    lm = load_causal_lm(spec, trust_remote_code)
    config = lm.config
    config.num_labels = 1
    if config.pad_token_id is None:
        config.pad_token_id = config.eos_token_id if isinstance(config.eos_token_id, int) else 0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        try:
            model = AutoModelForSequenceClassification.from_config(
                config, trust_remote_code=trust_remote_code
            )
        except ValueError:  # e.g. tether's RNN: a causal LM only
            raise TetherError(
                f"model '{spec}': no scalar-head (sequence-classification) version of a '{config.model_type}' model"
            ) from None
        nn.init.normal_(model.score.weight, std=1.0 / (config.hidden_size + 1) ** 0.5)
    missing = getattr(model, model.base_model_prefix).load_state_dict(
        getattr(lm, lm.base_model_prefix).state_dict()
    )
    if missing.missing_keys:
        raise TetherError(
            f"model '{spec}': backbone weights missing for the reward model: {missing.missing_keys[:3]}"
        )
    return model


def load_reward_model(spec: str, trust_remote_code: bool = False) -> Any:
    """A saved reward model (a one-label ``…ForSequenceClassification`` folder)."""
    from transformers import AutoModelForSequenceClassification

    location = resolve_model(spec)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            location.folder, trust_remote_code=trust_remote_code, dtype=torch.float32
        )
    except (OSError, ValueError) as err:
        raise TetherError(f"reward model '{spec}': cannot load: {str(err).splitlines()[0]}") from None
    if model.config.num_labels != 1:
        raise TetherError(
            f"reward model '{spec}': expected a one-label (scalar) head, found {model.config.num_labels}"
        )
    return model
