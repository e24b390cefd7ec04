"""Save a model and tokenizer as an ordinary Hugging Face folder (safetensors) that plain
``AutoModelForCausalLM.from_pretrained`` loads — LoRA adapters merged in, GGUF origins forgotten."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from tether import TetherError
from tether.models.lora import merged


def check_finite_weights(named_tensors: Iterable[tuple[str, torch.Tensor]], what: str) -> None:
    """Raise a one-line ``TetherError`` naming the first non-finite weight, before ``what`` is written."""
    for name, tensor in named_tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TetherError(f"{what}: weight '{name}' is not finite; nothing was written")


def save_model(model: Any, tokenizer: Any, out_dir: str | Path, state_dict: dict | None = None) -> Path:
    """Write ``model`` and ``tokenizer`` into ``out_dir`` atomically, file by file.

    Files are first written to a temporary folder beside ``out_dir``, then each is renamed into place,
    ``config.json`` last, so a folder with a config always holds a complete model. Other files already
    in ``out_dir`` (logs, checkpoints) are kept. A LoRA model is saved merged (the caller's model is left
    as it was). ``state_dict``: the weights to write instead of the model's own (full weights gathered
    from sharded training). Non-finite weights are refused before anything is written.
    """
    out = Path(out_dir)
    model = merged(model)
    weights = state_dict.items() if state_dict is not None else model.state_dict().items()
    check_finite_weights(weights, f"{out}")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.save-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        names = sorted(p.name for p in tmp.iterdir())
        names.sort(key=lambda name: name == "config.json")
        for name in names:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
