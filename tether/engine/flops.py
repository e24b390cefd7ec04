"""How close a run is to the hardware: tokens per second, model FLOP/s and MFU.

MFU (model FLOPs utilisation, Chowdhery et al. 2022, "PaLM", appendix B) is the FLOP/s the model's own
arithmetic needs at the achieved token rate, divided by the peak the device can do. Here the peak is
measured, not taken from a data sheet: the best rate of fp32 square matrix products (256² to 1024²) on
this process's device and threads (``matmul_peak``), so 100 % means "as fast as this machine multiplies
matrices", whatever the CPU.

Model FLOPs per token (``ModelCost``): 2 per weight of every matrix product (linear layers,
the unembedding, an RNN's input and recurrent weights; not the embedding lookup), plus attention's two
products, 4·d per attended position per layer (causal: half the sequence on average). A training step is
three forwards' worth (the backward pass costs two: Kaplan et al. 2020, "Scaling laws for neural language
models", section 2.1), whatever LoRA freezes; sampling, reference and old-policy passes one each.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import torch

TRAINING = 3.0  # forward + backward, in forwards


def matmul_weights(module: torch.nn.Module) -> int:
    """The weights that take part in a matrix product per token: linear layers (LoRA's too) and the
    input and recurrent weights of RNN layers. Tied weights count once per use (the unembedding is a
    linear layer even when it shares the embedding's weight)."""
    total = 0
    for child in module.modules():
        if isinstance(child, torch.nn.Linear):
            total += child.weight.numel()
        elif isinstance(child, torch.nn.RNNBase):
            total += sum(p.numel() for name, p in child.named_parameters() if name.startswith("weight"))
    return total


def _shape(module: torch.nn.Module) -> tuple[int, int]:
    """(layers, hidden size) of the first transformers config found in ``module``; (0, 0) for none (no
    attention to count, e.g. an RNN)."""
    for child in module.modules():
        config = getattr(child, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers") and hasattr(config, "hidden_size"):
            return int(config.num_hidden_layers), int(config.hidden_size)
    return 0, 0


@dataclass(frozen=True)
class ModelCost:
    """A model's arithmetic per token (module docstring), read once from the module."""

    weights: int
    layers: int
    hidden: int

    @classmethod
    def of(cls, module: torch.nn.Module) -> ModelCost:
        return cls(matmul_weights(module), *_shape(module))

    def forward_flops(self, rows: int, length: int) -> float:
        """FLOPs of one forward over ``rows`` sequences of ``length`` positions (padding included: the
        model computes it)."""
        per_token = 2.0 * self.weights + 4.0 * self.layers * self.hidden * length / 2.0
        return rows * length * per_token


@functools.cache
def matmul_peak(
    device: str = "cpu", threads: int = 0, sizes: tuple[int, ...] = (256, 512, 1024), seconds: float = 0.1
) -> float:
    """The best FLOP/s of fp32 square matrix products of ``sizes`` on ``device``, ``seconds`` each (once per
    process, device and thread count: pass ``torch.get_num_threads()``). Several sizes, because the best
    one differs between machines (on a 2-core CPU here: about 200 GFLOP/s at 256–512, 170–185 at 1024)
    and a peak set too low would overstate MFU."""
    generator = torch.Generator(device).manual_seed(0)  # not the global one: the run's RNG stays as seeded
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device, generator=generator)
        b = torch.randn(size, size, device=device, generator=generator)
        out = torch.empty(size, size, device=device)
        torch.mm(a, b, out=out)
        sync()
        repeats = max(1, 2**24 // size**2)  # about 16 M multiply-adds per timing at least
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            for _ in range(repeats):
                torch.mm(a, b, out=out)
            sync()
            best = max(best, repeats * 2.0 * size**3 / (time.perf_counter() - started))
    return best


def device_peak(device: Any) -> float:
    """:func:`matmul_peak` of ``device`` (a torch device) at this process's thread count."""
    return matmul_peak(str(device), torch.get_num_threads())


class Throughput:
    """Tokens and model FLOPs since a start, over wall time: the ``tokens_per_s``, ``model_tflops`` (per
    second) and ``mfu`` of a metrics row, for one process (``processes`` of them: each does its share, the
    rates are per process times the count, the peak too). A resumed run counts from its resume."""

    def __init__(self, device: Any, processes: int = 1) -> None:
        self.processes = processes
        self.peak = device_peak(device)
        self.tokens, self.flops = 0.0, 0.0
        self.started = time.perf_counter()

    def add(self, tokens: float, flops: float) -> None:
        self.tokens += tokens
        self.flops += flops

    def row(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.flops / elapsed  # this process's
        return {
            "tokens_per_s": self.tokens / elapsed * self.processes,
            "model_tflops": rate * self.processes / 1e12,
            "mfu": rate / self.peak if self.peak > 0 else 0.0,
        }
