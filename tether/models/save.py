"""Save a model and tokenizer as an ordinary Hugging Face folder (safetensors) that plain
``AutoModelForCausalLM.from_pretrained`` loads — LoRA adapters merged in, GGUF origins forgotten."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tether.models.lora import merged


def save_model(model: Any, tokenizer: Any, out_dir: str | Path, state_dict: dict | None = None) -> Path:
    """Write ``model`` and ``tokenizer`` into ``out_dir`` atomically, file by file.

    Files are first written to a temporary folder beside ``out_dir``, then each is renamed into place,
    ``config.json`` last, so a folder with a config always holds a complete model. Other files already
    in ``out_dir`` (logs, checkpoints) are kept. A LoRA model is saved merged (the caller's model is left
    as it was). ``state_dict``: the weights to write instead of the model's own (full weights gathered
    from sharded training).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = merged(model)
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
