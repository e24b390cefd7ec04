"""The machinery every training loop shares, built one way for the offline ``Trainer`` and the online loop
(``algorithms/online.py``):

- the Accelerator, with the config's ``mixed_precision`` (``build_accelerator``);
- AdamW over the prepared module and the warm-up + decay schedule, a pure function of the step;
- gradient accumulation (no gradient sync before a step's last micro-batch), autocast, clipping, and the
  NaN guard before every optimiser step;
- the metric log (every ``log_every`` steps and the last: metrics.jsonl, TensorBoard and the trackers of
  ``report_to``), the progress bar (main process);
- checkpoints every ``save_every`` steps — module, optimiser, RNG states of every process, the loop's other
  models and whatever state it carries — and their exact resume.

A loop owns its data, its loss and what a step means; the ``Session`` owns everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from tether.config import ConfigError, TrainConfig, to_dict
from tether.engine.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_models,
    save_checkpoint,
    save_models,
)
from tether.engine.guard import NanGuard
from tether.engine.logging import MetricLogger, parse_report_to
from tether.engine.optim import build_optimizer, lr_multiplier, set_learning_rate
from tether.models.save import check_finite_weights

ModelsFn = Callable[[], dict[str, torch.nn.Module]]


def build_accelerator(mixed_precision: str = "no") -> Accelerator:
    """An Accelerator with autocast at ``mixed_precision`` ("no", "bf16" or "fp16"), on the CPU when there
    is no GPU (``cpu=True`` also lets Accelerate run DDP over gloo when launched by torchrun).

    fp16 on the CPU is refused: Accelerate accepts it there but autocasts nothing, so the run would train
    in fp32 without saying so. Accelerate keeps one precision per process; a later stage of the same
    process (the pipeline) asking for another gets a fresh Accelerator state, the processes kept."""
    cpu_only = not (
        torch.cuda.is_available()
        or (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    )
    if mixed_precision == "fp16" and cpu_only:
        raise ConfigError(
            "field 'mixed_precision': fp16 autocast needs a GPU (on the CPU Accelerate would silently train "
            "in fp32); use bf16 or no"
        )
    _forget_other_precision(mixed_precision)
    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu_only)
    except ValueError as err:  # e.g. "bf16 mixed precision requires a supported device."
        if "mixed precision" not in str(err):
            raise
        raise ConfigError(f"field 'mixed_precision': {str(err).splitlines()[0]}") from None


def _forget_other_precision(mixed_precision: str) -> None:
    """Clear Accelerate's per-process state when it holds another precision (which Accelerate would refuse
    to change); the process group stays. Meant for stages run one after another: an Accelerator built
    before sees the new state too, so it must be done with."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    shared = AcceleratorState._shared_state  # Accelerate's per-process singleton (empty until first use)
    if (
        shared
        and shared.get("_mixed_precision") != mixed_precision
        and shared.get("distributed_type") != DistributedType.DEEPSPEED  # DeepSpeed sets it in its config
    ):
        AcceleratorState._reset_state(reset_partial_state=False)


class Session:
    """One training run's accelerator, optimiser, schedule, guard, log and checkpoints (module docstring).

    ``module`` is prepared (moved, wrapped) here; use ``session.module`` afterwards. ``total_steps``: the
    optimiser-schedule length, also the last step, which is always logged."""

    def __init__(
        self,
        config: TrainConfig,
        module: torch.nn.Module,
        total_steps: int,
        accelerator: Accelerator | None = None,
    ) -> None:
        self.config, self.total_steps = config, total_steps
        self.accelerator = accelerator or build_accelerator(config.mixed_precision)
        self.warmup_steps = round(config.warmup_ratio * total_steps)
        optimizer = build_optimizer(
            module.named_parameters(),
            config.learning_rate,
            config.weight_decay,
            (config.adam_beta1, config.adam_beta2),
        )
        self.module, self.optimizer = self.accelerator.prepare(module, optimizer)
        if config.torch_compile:
            self.unwrapped().compile()  # in place: parameter names and checkpoints unchanged
        self.logger = MetricLogger(
            config.output_dir,
            self.accelerator.is_main_process,
            config.tensorboard,
            fresh=not config.resume,
            report_to=parse_report_to(config.report_to),
            run_config=to_dict(config),
        )
        self.guard = NanGuard(config.nan_policy, config.max_nan_skips)
        self.resumed_from: Path | None = None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def unwrapped(self) -> Any:
        """The prepared module without distributed wrappers."""
        return self.accelerator.unwrap_model(self.module)

    def place(self, *models: torch.nn.Module | None) -> None:
        """Move the loop's other models (a frozen reference, a proposal, past policies) to the device the
        prepared module is on."""
        for model in models:
            if model is not None:
                model.to(self.device)

    # ------------------------------------------------------------------------------------------ a step

    def set_learning_rate(self, step: int) -> float:
        """Set and return the scheduled learning rate of optimiser step ``step`` (0-based)."""
        config = self.config
        lr = config.learning_rate * lr_multiplier(
            step, self.total_steps, self.warmup_steps, config.lr_scheduler, config.min_lr_ratio
        )
        set_learning_rate(self.optimizer, lr)
        return lr

    def autocast(self) -> Any:
        """The forward's autocast context (``mixed_precision``; a no-op at "no")."""
        return self.accelerator.autocast()

    @contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        """Wrap one micro-batch's forward and backward: gradients are synchronised across processes only
        on a step's ``last`` micro-batch."""
        with self.accelerator.no_sync(self.module) if not last else nullcontext():
            yield

    def optimizer_step(self, step: int, loss: float | torch.Tensor) -> float:
        """Clip the accumulated gradients, step unless the NaN guard refuses (``step``: 1-based, named in
        its message; ``loss``: the step's loss, checked with the gradient norm), clear them; return the
        gradient norm before clipping."""
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
        grad_norm = self.accelerator.clip_grad_norm_(self.module.parameters(), max_norm)
        if self.guard.allows(step, loss=loss, grad_norm=grad_norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    # ------------------------------------------------------------------------------ logs, checkpoints

    def progress_bar(self, description: str, initial: int = 0) -> Any:
        return tqdm(
            total=self.total_steps,
            initial=initial,
            desc=description,
            disable=not (self.config.progress and self.accelerator.is_main_process),
            dynamic_ncols=True,
        )

    def log(self, step: int, row: dict[str, Any]) -> None:
        """Write ``row`` as step ``step``'s metrics when it is due: every ``log_every`` steps and the last."""
        if step % self.config.log_every == 0 or step == self.total_steps:
            self.logger.log(step, row)

    def checkpoint(self, step: int, state: dict[str, Any], models: ModelsFn | None = None) -> None:
        """Every ``save_every`` steps: a checkpoint of the module, optimiser and RNG states, ``state``
        (JSON: what the loop carries, e.g. β or a moving baseline) and the models ``models()`` names."""
        config = self.config
        if not config.save_every or step % config.save_every:
            return
        check_finite_weights(self.module.named_parameters(), f"checkpoint step-{step}")
        extra = (lambda folder: save_models(models(), folder)) if models is not None else None
        save_checkpoint(self.accelerator, config.output_dir, step, state, config.keep_checkpoints, extra)

    def resume(self) -> dict[str, Any]:
        """With ``resume=true``, restore the latest checkpoint (module, optimiser, RNG states), drop the log
        rows after it, and return its state (``step`` and what the loop saved); {} when there is nothing to
        resume. The loop's other models follow with ``load_models``, once the loop has rebuilt them."""
        if not self.config.resume:
            return {}
        found = list_checkpoints(self.config.output_dir)
        main = self.accelerator.is_main_process
        if not found:
            if main:
                tqdm.write(f"resume: no checkpoint in {self.config.output_dir}; starting from step 0")
            return {}
        state = load_checkpoint(self.accelerator, found[-1])
        self.resumed_from = found[-1]
        if main:
            self.logger.truncate_after(int(state["step"]))
            tqdm.write(f"resume: continuing from {found[-1]} (step {state['step']} of {self.total_steps})")
        return state

    def load_models(self, models: dict[str, torch.nn.Module]) -> None:
        """Restore ``models`` (by name, as ``checkpoint`` saved them) from the checkpoint resumed from."""
        if self.resumed_from is None:
            raise RuntimeError("load_models before a resume")
        load_models(models, self.resumed_from)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Wrap a loop: an error (or Ctrl-C) inside closes the log and the trackers, marked failed, before
        it propagates."""
        try:
            yield
        except BaseException:
            self.logger.close(failed=True)
            raise

    def close(self) -> None:
        self.logger.close()
