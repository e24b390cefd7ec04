"""Sampling from the policy (``generate``, the lean sampler, vLLM, multi-turn episodes), the ``Experience``
batch of the online loop, and the shaped reward with its adaptive β (``rewards``)."""

from tether.rollout.generate import GenerationResult, generate

__all__ = ["GenerationResult", "generate"]
