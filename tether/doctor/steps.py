"""The GPU check's training steps on a randomly initialised Llama-shaped model (about 0.5B parameters):
SFT and DPO through tether's Trainer, GRPO through the online loop's pieces, timed, with tokens/s and MFU."""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tether.doctor.runner import mfu


@dataclass(frozen=True)
class Shape:
    """A Llama decoder's size."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int


LLAMA_0_5B = Shape(vocab=32000, hidden=1024, layers=24, heads=16, kv_heads=4, intermediate=5632)


@dataclass
class StepResult:
    params: int
    tokens_per_step: int
    seconds_per_step: float
    loss: float
    peak_memory_gb: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.seconds_per_step

    def describe(self, peak_flops: float | None) -> str:
        text = (
            f"{self.params / 1e6:.1f}M params, {self.tokens_per_step} tokens/step, "
            f"{self.tokens_per_s:,.0f} tokens/s"
        )
        if peak_flops:
            text += f", MFU {mfu(self.params, self.tokens_per_s, peak_flops):.1%}"
        if self.peak_memory_gb:
            text += f", {self.peak_memory_gb:.1f} GB peak memory"
        return text + f", loss {self.loss:.3f}"


def build_llama(shape: Shape, device: str, dtype: Any, eos_ids: Sequence[int] = (0,), pad_id: int = 1) -> Any:
    """A randomly initialised Llama causal LM of ``shape``, built on ``device`` (tied embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=list(eos_ids),
        pad_token_id=pad_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = list(eos_ids)
    model.generation_config.pad_token_id = pad_id
    return model


def _timed(
    step: Callable[[], tuple[int, float]], device: str, warmup: int, steps: int
) -> tuple[int, float, float]:
    """(tokens of the last step, mean seconds per timed step, last loss)."""
    import torch

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        tokens, loss = step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return tokens, (time.perf_counter() - started) / steps, loss


def _memory_gb(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else 0.0


def _trainer_steps(
    model: Any, data: list, collate: Callable, loss_fn: Callable, count_fn: Callable, batch: int, **run: Any
) -> StepResult:
    """Optimiser steps of tether's Trainer (its device placement, autocast and fused AdamW) on ``data``."""
    from tether.config import TrainConfig
    from tether.engine import Trainer
    from tether.models import TokenLogProbs

    device, warmup, steps = run["device"], run["warmup"], run["steps"]
    with tempfile.TemporaryDirectory(prefix="tether-gpu-check-") as folder:
        config = TrainConfig(
            output_dir=folder,
            batch_size=batch,
            max_steps=warmup + steps,
            learning_rate=1e-4,
            warmup_ratio=0.0,
            mixed_precision=run["mixed_precision"],
            progress=False,
            tensorboard=False,
        )
        trainer = Trainer(config, TokenLogProbs(model), data, collate, loss_fn, count_fn)

        def step() -> tuple[int, float]:
            row = trainer.train_step()
            trainer.step += 1
            return int(row["items"]), row["loss"]

        _, seconds, loss = _timed(step, device, warmup, steps)
    params = sum(p.numel() for p in model.parameters())
    return StepResult(params, 0, seconds, loss, _memory_gb(device))


def sft_step(
    shape: Shape = LLAMA_0_5B,
    device: str = "cuda",
    mixed_precision: str = "bf16",
    batch: int = 8,
    seq_len: int = 1024,
    warmup: int = 2,
    steps: int = 4,
) -> StepResult:
    """SFT steps (next-token loss on every token) on random tokens, through tether's Trainer."""
    import torch

    from tether.algorithms.common import count_loss_tokens, lm_batch_loss
    from tether.data.tokenize import TokenizedExample, pad_collate

    model = build_llama(shape, device, torch.float32)
    ids = torch.randint(2, shape.vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0)).tolist()
    data = [TokenizedExample(row, row) for row in ids]
    result = _trainer_steps(
        model,
        data,
        lambda examples: pad_collate(examples, 1),
        lm_batch_loss,
        count_loss_tokens,
        batch,
        device=device,
        mixed_precision=mixed_precision,
        warmup=warmup,
        steps=steps,
    )
    result.tokens_per_step = batch * seq_len
    return result


def dpo_step(
    shape: Shape = LLAMA_0_5B,
    device: str = "cuda",
    mixed_precision: str = "bf16",
    pairs: int = 8,
    prompt_len: int = 256,
    response_len: int = 256,
    warmup: int = 2,
    steps: int = 4,
) -> StepResult:
    """DPO steps on random pairs through tether's padding-free pair batches (each prompt computed once),
    its DPO loss and Trainer. Reference log-probs, computed once per run in tether, are set to 0."""
    import torch

    from tether.algorithms.dpo import collate_pairs, pair_loss_fn
    from tether.data.tokenize import TokenizedExample, TokenizedPair
    from tether.models.forward import shares_prefixes
    from tether.ops.logprobs import IGNORE_INDEX

    model = build_llama(shape, device, torch.float32)
    generator = torch.Generator().manual_seed(0)
    data = []
    for _ in range(pairs):
        prompt = torch.randint(2, shape.vocab, (prompt_len,), generator=generator).tolist()
        sides = [torch.randint(2, shape.vocab, (response_len,), generator=generator).tolist() for _ in "cr"]
        chosen, rejected = (
            TokenizedExample(prompt + side, [IGNORE_INDEX] * prompt_len + side) for side in sides
        )
        data.append(TokenizedPair(chosen, rejected, 1.0))
    pack_length = 2 * (prompt_len + 2 * response_len + 2)  # two pairs per row

    result = _trainer_steps(
        model,
        data,
        lambda batch: collate_pairs(batch, 1, pack_length, shares_prefixes(model)),
        pair_loss_fn({"dpo": 1.0}, {"beta": 0.1}, with_reference=True),
        lambda batch: float(batch["weight"].sum()),
        pairs,
        device=device,
        mixed_precision=mixed_precision,
        warmup=warmup,
        steps=steps,
    )
    result.tokens_per_step = pairs * (prompt_len + 2 * response_len)
    return result


def grpo_step(
    shape: Shape = LLAMA_0_5B,
    device: str = "cuda",
    dtype_name: str = "bfloat16",
    prompts: int = 8,
    group_size: int = 4,
    max_new_tokens: int = 128,
    warmup: int = 1,
    steps: int = 2,
) -> StepResult:
    """GRPO steps as tether's online loop runs them: sample G responses per gym prompt with tether's
    sampler, reference log-probs, the gym judge's score, group advantages, the clipped policy loss with
    β·KL, AdamW. The model's weights are in ``dtype_name``; tokens/s counts the tokens trained on (each
    prompt once per group) over the whole step, sampling included."""
    import torch

    from tether.algorithms.online_batch import forward, make_experience
    from tether.algorithms.policy_gradient import pg_advantages, pg_loss
    from tether.config import PGConfig
    from tether.engine.optim import build_optimizer
    from tether.gym import get_task
    from tether.judges import FunctionJudge
    from tether.models import train_tokenizer
    from tether.models.value import PolicyValue

    task = get_task("reviews")
    tokenizer = train_tokenizer(task.pretrain_texts()[:500], vocab_size=512)
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")]
    policy = build_llama(shape, device, getattr(torch, dtype_name), stops, tokenizer.pad_token_id)
    reference = copy.deepcopy(policy).requires_grad_(False).eval()
    config = PGConfig(
        batch_size=prompts,
        group_size=group_size,
        max_new_tokens=max_new_tokens,
        minibatch_size=prompts * group_size,
    )
    module = PolicyValue(policy, "none")
    optimizer = build_optimizer(
        module.named_parameters(), 1e-5, config.weight_decay, (config.adam_beta1, config.adam_beta2)
    )
    scorer, batch_prompts, state = FunctionJudge(task.gold_rewards), task.prompts("train", n=prompts), {}

    def step() -> tuple[int, float]:
        experience = make_experience(
            module, reference, tokenizer, scorer, batch_prompts, config, config.kl_coef
        )
        pg_advantages(experience, config, state)
        out = forward(module, experience, config.temperature)
        if experience.old_logprobs is None:  # the single on-policy update: π_old = π
            experience.old_logprobs = out["logprobs"].detach()
        loss, _ = pg_loss(out, experience, config, config.kl_coef)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        prompt_tokens = int(experience.attention_mask[:, : experience.prompt_length].sum()) // group_size
        return prompt_tokens + int(experience.response_mask.sum()), float(loss.detach())

    tokens, seconds, loss = _timed(step, device, warmup, steps)
    params = sum(p.numel() for p in policy.parameters())
    return StepResult(params, tokens, seconds, loss, _memory_gb(device))
