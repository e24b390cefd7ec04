"""The training loop shared by every offline stage (pre-training, SFT, reward model, DPO, …).

A stage hands the trainer a module, a dataset (a list of examples), a ``collate`` function and two
callables:

- ``loss_fn(module, batch) -> (loss_sum, metrics)``: the loss *summed* over the batch's loss items;
- ``count_fn(batch) -> float``: how many loss items (tokens, pairs, …) the batch holds, or their total weight.

Each optimiser step divides the summed losses by the number of items in the whole step — all
micro-batches of all processes — so 4 micro-batches of 1 give the same gradient as 1 batch of 4, and two
processes the same as one with the same global batch.

Data order is a pure function of (seed, epoch): step s reads its global batch at a fixed position of that
epoch's permutation, and each process reads its own slice of every micro-batch. A resumed run therefore
needs only the step to continue exactly where it stopped.

The accelerator, optimiser, schedule, guard, log and checkpoints are a ``Session`` (``session.py``), built
the same way as the online loop's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from tether import TetherError
from tether.config import TrainConfig
from tether.engine.flops import TRAINING, ModelCost, Throughput
from tether.engine.session import Session, build_accelerator

Batch = dict[str, torch.Tensor]
LossFn = Callable[[torch.nn.Module, Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]
CountFn = Callable[[Batch], float]


class Trainer:
    """Runs ``config``'s optimisation of ``module`` on ``train_data``; see the module docstring."""

    def __init__(
        self,
        config: TrainConfig,
        module: torch.nn.Module,
        train_data: Sequence[Any],
        collate: Callable[[list[Any]], Batch],
        loss_fn: LossFn,
        count_fn: CountFn,
        eval_data: Sequence[Any] | None = None,
        accelerator: Accelerator | None = None,
        groups: Sequence[int] | None = None,
        evaluate_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    ) -> None:
        """``groups``: a group id per training example; when given, each epoch shuffles the groups and
        keeps a group's examples adjacent, so they mostly share a micro-batch (see ``step_indices``).
        ``evaluate_fn``: replaces the generic evaluation (``loss_fn`` over ``eval_data``): called with the
        unwrapped module, without gradients, on every process; returns the ``eval/…`` metrics to log."""
        self.config = config
        if groups is not None and len(groups) != len(train_data):
            raise ValueError(f"{len(groups)} group ids for {len(train_data)} training examples")
        self.groups = None if groups is None else torch.as_tensor(groups)
        accelerator = accelerator or build_accelerator(config.mixed_precision)
        set_seed(config.seed)
        self.train_data, self.eval_data = train_data, eval_data
        self.collate, self.loss_fn, self.count_fn = collate, loss_fn, count_fn
        self.evaluate_fn = evaluate_fn

        world = accelerator.num_processes
        self.micro_batch = config.batch_size * world  # examples per micro-step over all processes
        self.global_batch = self.micro_batch * config.grad_accum_steps
        self.steps_per_epoch = len(train_data) // self.global_batch
        if self.steps_per_epoch == 0:
            raise TetherError(
                f"the training data has {len(train_data)} examples, fewer than one step's global batch of "
                f"{self.global_batch} (batch_size × grad_accum_steps × processes); lower batch_size"
            )
        self.total_steps = config.max_steps or max(1, math.ceil(config.num_epochs * self.steps_per_epoch))
        self.cost = ModelCost.of(module)  # FLOPs per token, for tokens/s and MFU (engine/flops.py)
        # The accelerator, optimiser, schedule, guard, log and checkpoints, built as the online loop's are.
        self.session = Session(config, module, self.total_steps, accelerator)
        self.accelerator, self.module, self.optimizer = (
            accelerator,
            self.session.module,
            self.session.optimizer,
        )
        self.logger, self.guard = self.session.logger, self.session.guard
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.work = (0.0, 0.0)  # the last step's tokens and model FLOPs on this process

    # ------------------------------------------------------------------------------------------ data

    def step_indices(self, step: int) -> list[list[int]]:
        """This process's example indices for each micro-batch of optimiser step ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_data), generator=generator)
        if self.groups is not None:  # groups in random order, a group's examples together
            _, ids = torch.unique(self.groups, return_inverse=True)
            rank_of_group = torch.randperm(int(ids.max()) + 1, generator=generator)
            order = order[torch.argsort(rank_of_group[ids[order]], stable=True)]
        start = position * self.global_batch
        rank, size = self.accelerator.process_index, self.config.batch_size
        micro = []
        for m in range(self.config.grad_accum_steps):
            chunk = order[start + m * self.micro_batch : start + (m + 1) * self.micro_batch]
            micro.append(chunk[rank * size : (rank + 1) * size].tolist())
        return micro

    def _global_sum(self, value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, reduction="sum").item())

    # ------------------------------------------------------------------------------------------ loop

    def fit(self) -> dict[str, float]:
        """Train to ``total_steps`` (resuming if asked); return the final evaluation metrics, after the
        step reached and the last step's training ``loss``."""
        config, session = self.config, self.session
        self.step = int(session.resume().get("step", 0))
        bar = session.progress_bar(f"train {config.output_dir}", initial=self.step)
        items_seen, started = 0.0, time.perf_counter()
        throughput = Throughput(self.accelerator.device, self.accelerator.num_processes)
        with session.running():
            while self.step < self.total_steps:
                row = self.train_step()
                items_seen += row["items"]
                throughput.add(*self.work)
                self.step += 1
                row["items_per_s"] = items_seen / max(time.perf_counter() - started, 1e-9)
                row.update(throughput.row())
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", mfu=f"{row['mfu']:.0%}")
                session.log(self.step, row)
                if config.eval_every and self.step % config.eval_every == 0 and self.step < self.total_steps:
                    self.logger.log(self.step, self.evaluate())
                session.checkpoint(self.step, {})
            bar.close()
            final = self.evaluate()
            self.logger.log(self.step, final)
        session.close()
        last = {"loss": self.history[-1]["loss"]} if self.history else {}
        return {"step": self.step, **last, **final}

    def train_step(self) -> dict[str, float]:
        """One optimiser step over ``grad_accum_steps`` micro-batches; returns the step's metrics."""
        accelerator, session = self.accelerator, self.session
        lr = session.set_learning_rate(self.step)
        self.module.train()
        batches = [self.collate([self.train_data[i] for i in idx]) for idx in self.step_indices(self.step)]
        batches = [{k: v.to(accelerator.device) for k, v in b.items()} for b in batches]
        global_items = self._global_sum(float(sum(self.count_fn(b) for b in batches)))
        self.work = batch_work(batches, self.cost)  # this process's (tokens, FLOPs): fit makes rates of them
        if global_items <= 0:
            raise TetherError(f"step {self.step}: the batch holds no loss items (all labels masked?)")
        scale = accelerator.num_processes / global_items  # DDP averages gradients over processes
        loss_total = 0.0
        metric_sums: dict[str, float] = {}
        for m, batch in enumerate(batches):
            with session.accumulating(last=m == len(batches) - 1):
                with session.autocast():
                    loss_sum, metrics = self.loss_fn(self.module, batch)
                accelerator.backward(loss_sum * scale)
            loss_total += float(loss_sum.detach())
            for key, value in metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + float(value)
        loss = self._global_sum(loss_total) / global_items  # the same on every process
        grad_norm = session.optimizer_step(self.step + 1, loss)
        row = {
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "items": global_items,
            "epoch": self.step / self.steps_per_epoch,
        }
        if self.guard.skipped:
            row["nan_skips"] = self.guard.skipped
        row.update(
            {
                k: self._global_sum(v) / accelerator.num_processes / len(batches)
                for k, v in metric_sums.items()
            }
        )
        self.history.append(row)
        return row

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss per item and the batch mean of each loss metric over the eval data (each process takes its
        share); {} without eval data."""
        if not self.eval_data:
            return {}
        accelerator, size = self.accelerator, self.config.eval_batch_size
        self.module.eval()
        if self.evaluate_fn is not None:
            with accelerator.autocast():
                result = self.evaluate_fn(self.unwrapped())
            self.module.train()
            return result
        mine = list(range(accelerator.process_index, len(self.eval_data), accelerator.num_processes))
        loss_total, items, batches = 0.0, 0.0, 0
        metric_sums: dict[str, float] = {}
        for start in range(0, len(mine), size):
            batch = self.collate([self.eval_data[i] for i in mine[start : start + size]])
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.autocast():
                loss_sum, metrics = self.loss_fn(self.module, batch)
            loss_total += float(loss_sum)
            items += self.count_fn(batch)
            batches += 1
            for key, value in metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + float(value)
        self.module.train()
        result = {"eval/loss": self._global_sum(loss_total) / max(self._global_sum(items), 1.0)}
        n_batches = max(self._global_sum(batches), 1.0)
        result.update({f"eval/{k}": self._global_sum(v) / n_batches for k, v in metric_sums.items()})
        return result

    def unwrapped(self) -> torch.nn.Module:
        """The trained module without distributed wrappers."""
        return self.session.unwrapped()


def batch_work(batches: list[Batch], cost: ModelCost) -> tuple[float, float]:
    """The tokens of a step's micro-batches (the 2-D attention mask's ones; every position of a packed or
    shared-prefix layout) and the model FLOPs of their forward and backward (every position computed)."""
    tokens = flops = 0.0
    for batch in batches:
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        tokens += float(mask.sum()) if mask is not None and mask.dim() == 2 else float(ids.numel())
        flops += TRAINING * cost.forward_flops(*ids.shape)
    return tokens, flops
