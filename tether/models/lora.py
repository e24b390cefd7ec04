"""LoRA adapters through peft. With LoRA, the frozen reference is the same model with adapters disabled."""

from __future__ import annotations

import copy
import sys
from typing import Any


def apply_lora(
    model: Any,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: str = "all-linear",
    task_type: str = "CAUSAL_LM",
) -> Any:
    """Wrap ``model`` with trainable LoRA adapters (Hu et al. 2021); base weights are frozen.

    ``target_modules`` is ``all-linear`` or a comma-separated list of module names. With ``task_type``
    ``SEQ_CLS`` (reward models) peft also trains the new scalar head in full.
    """
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = (
        target_modules
        if target_modules == "all-linear"
        else [name.strip() for name in target_modules.split(",")]
    )
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type=task_type
    )
    return get_peft_model(model, config)


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a peft ``PeftModel``. peft is not imported to answer (that takes about 0.2 s
    here, once per process): a model can only be one if peft has been imported already."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def merged(model: Any) -> Any:
    """A plain model with ``model``'s current weights: ``model`` itself, or, with LoRA, a copy with the
    adapters merged in (``model`` is left as it was)."""
    return copy.deepcopy(model).merge_and_unload() if is_peft_model(model) else model


def frozen_copy(model: Any) -> Any:
    """A separate, frozen, plain copy of ``model``'s current weights (LoRA merged), in eval mode."""
    plain = merged(model)
    copied = copy.deepcopy(plain) if plain is model else plain
    return copied.requires_grad_(False).eval()
