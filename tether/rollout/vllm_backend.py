"""A vLLM generation backend for the online loop (GPU machines where ``vllm`` is installed).

Sampling dominates online RL on small models (see ``benchmarks/``); vLLM's paged attention and continuous
batching make it several times faster than ``transformers.generate`` on a GPU. The backend only produces
response token ids: ``rollout.experience.sample`` assembles the same ``Experience`` from them, and every
log-probability (π_old, π_ref) is still computed by the training model, so the importance ratios stay
exact even though vLLM's kernels differ numerically.

The engine holds its own copy of the weights (colocated on the training GPU, ``gpu_memory_utilization``
of its memory). After each optimiser step the online loop calls ``load_weights(policy)`` so the next batch
is sampled from the current policy (LoRA adapters merged first). The weight-loading entry point moved
between vLLM releases; ``_engine_model`` knows the ones of 0.6–0.10 and names the problem otherwise.
"""

from __future__ import annotations

import math
from typing import Any

from tether import TetherError
from tether.models.lora import merged


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise TetherError(
            "rollout_backend=vllm: the vllm package is not installed (pip install vllm; it needs a CUDA GPU)"
        ) from None
    return vllm


def _sampled_logprob(step: Any, token: int) -> float:
    """vLLM's log-prob of ``token`` at one position: a dict token id → Logprob (or a float)."""
    entry = step[token] if isinstance(step, dict) else step
    return float(getattr(entry, "logprob", entry))


class VLLMBackend:
    """``generate(prompt_ids, max_new_tokens, temperature, top_p, stop_ids) -> response ids`` via vLLM."""

    def __init__(self, model: str, gpu_memory_utilization: float = 0.4, seed: int = 0, dtype: str = "auto"):
        vllm = _import_vllm()
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=model,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            dtype=dtype,
            enable_prefix_caching=True,  # the G samples of a prompt share its prefix
        )

    def generate(
        self,
        prompt_ids: list[list[int]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop_ids: list[int],
    ) -> list[list[int]]:
        params = self._vllm.SamplingParams(
            n=1,
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop_token_ids=stop_ids,
            logprobs=0,  # the sampled token's own log-prob, for importance-sampling correction
        )
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        responses, self.last_logprobs = [], []
        for output in outputs:
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [_sampled_logprob(step, token) for step, token in zip(completion.logprobs or [], ids)]
            # A response stopped by a stop id ends with it, as with transformers (the mask counts it).
            if completion.finish_reason == "stop" and (not ids or ids[-1] not in stop_ids):
                ids.append(stop_ids[0])
            responses.append(ids)
            # NaN where the engine gave none (an appended stop id): the trainer's own value stands there.
            self.last_logprobs.append(logprobs + [math.nan] * (len(ids) - len(logprobs)))
        return responses

    def load_weights(self, policy: Any) -> None:
        """Copy the policy's current weights into the engine (LoRA merged into a copy first)."""
        weights = merged(policy).state_dict()
        self._engine_model().load_weights((name, p.detach()) for name, p in weights.items())
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached prefixes hold keys/values of the old weights

    def _engine_model(self) -> Any:
        engine = self.llm.llm_engine
        for path in (
            ("model_executor", "driver_worker", "model_runner", "model"),
            ("model_executor", "driver_worker", "worker", "model_runner", "model"),
        ):
            node = engine
            for attribute in path:
                node = getattr(node, attribute, None)
                if node is None:
                    break
            if node is not None:
                return node
        raise TetherError(
            "rollout_backend=vllm: cannot reach the engine's model to load new weights in this vLLM "
            "version (tried model_executor.driver_worker[.worker].model_runner.model)"
        )
