"""Load, build, adapt and save causal LMs: local HF folders, GGUF files, tiny models from a config."""

from tether.models.forward import TokenLogProbs, token_logprobs
from tether.models.load import load_causal_lm, load_tokenizer, resolve_model
from tether.models.lora import apply_lora
from tether.models.save import save_model
from tether.models.tiny import build_tiny_model, train_tokenizer

__all__ = [
    "TokenLogProbs",
    "apply_lora",
    "build_tiny_model",
    "load_causal_lm",
    "load_tokenizer",
    "resolve_model",
    "save_model",
    "token_logprobs",
    "train_tokenizer",
]
