"""Generation from the policy (HF ``generate`` with KV cache) and, later, the Experience batch and scorers."""

from tether.rollout.generate import GenerationResult, generate

__all__ = ["GenerationResult", "generate"]
