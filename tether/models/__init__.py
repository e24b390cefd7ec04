"""Load, build, adapt and save causal LMs: local HF folders, GGUF files, tiny models from a config (a Llama,
or a recurrent LM: importing this package registers ``tether_rnn`` with transformers' Auto classes)."""

from tether.models.forward import TokenLogProbs, token_logprobs
from tether.models.load import load_causal_lm, load_tokenizer, resolve_model
from tether.models.lora import apply_lora
from tether.models.rnn import TetherRNNConfig, TetherRNNForCausalLM, build_rnn_model, is_rnn
from tether.models.save import save_model
from tether.models.tiny import build_tiny_model, train_tokenizer

__all__ = [
    "TetherRNNConfig",
    "TetherRNNForCausalLM",
    "TokenLogProbs",
    "apply_lora",
    "build_rnn_model",
    "build_tiny_model",
    "is_rnn",
    "load_causal_lm",
    "load_tokenizer",
    "resolve_model",
    "save_model",
    "token_logprobs",
    "train_tokenizer",
]
