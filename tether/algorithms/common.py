"""What every stage does the same way: load or adapt its model, fit next tokens, save its output. (Finding
its data, prompts and judge from their specs is ``tether.specs``.)"""

from __future__ import annotations

from typing import Any

from tether.config import ModelConfig, save_config
from tether.models import apply_lora, load_causal_lm, load_tokenizer, save_model
from tether.models.forward import TokenLogProbs
from tether.models.lora import is_peft_model


def load_policy(config: ModelConfig) -> tuple[Any, Any]:
    """The model and tokenizer a stage starts from, with LoRA adapters when asked."""
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    model = load_causal_lm(config.model, config.trust_remote_code)
    if config.lora:
        model = apply_lora(
            model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules
        )
    return model, tokenizer


def finish(trainer: Any, model: Any, tokenizer: Any, config: Any) -> None:
    """Save the trained model (main process) and the config that made it, then sync processes."""
    finish_policy(trainer.accelerator, model, tokenizer, config, wrapped=trainer.module)


def finish_policy(accelerator: Any, model: Any, tokenizer: Any, config: Any, wrapped: Any = None) -> None:
    """As :func:`finish`, for loops that hold an Accelerator rather than a Trainer.

    ``wrapped``: the prepared module that holds ``model``. Its weights are then collected with
    ``accelerator.get_state_dict`` — every process takes part, and under FSDP or DeepSpeed ZeRO-3 that
    gathers the shards into full tensors — and saved under ``model``'s own parameter names. (A LoRA model
    is saved from the object itself, merged; sharded LoRA saving is not supported.)
    """
    accelerator.wait_for_everyone()
    state_dict = None
    if wrapped is not None and not is_peft_model(model):
        full = accelerator.get_state_dict(wrapped)
        prefix = next(
            (
                f"{name}."
                for name, child in accelerator.unwrap_model(wrapped).named_children()
                if child is model
            ),
            "",
        )
        state_dict = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)} if full else None
    if accelerator.is_main_process:
        save_model(model, tokenizer, config.output_dir, state_dict=state_dict)
        save_config(config, f"{config.output_dir}/tether_config.yaml")
    accelerator.wait_for_everyone()


def lm_batch_loss(module: TokenLogProbs, batch: dict) -> tuple[Any, dict]:
    """Summed next-token NLL over the batch's loss tokens (see losses/lm.py)."""
    from tether.losses.lm import nll_loss

    logprobs = module(batch["input_ids"], batch["attention_mask"], batch["labels"])  # (B, T)
    nll_sum, _, metrics = nll_loss(logprobs, loss_token_mask(batch["labels"]))
    return nll_sum.sum(), metrics


def fit_next_token(
    config: Any, model: Any, tokenizer: Any, train: list, evaluation: list
) -> dict[str, float]:
    """Train ``model`` on the next-token loss of the labelled tokens of ``train`` (``TokenizedExample``
    rows, padded per batch), evaluate on ``evaluation``, save it: what pre-training and SFT share (they
    differ in their data). Returns the final evaluation metrics."""
    from tether.data.tokenize import pad_collate
    from tether.engine import Trainer

    trainer = Trainer(
        config,
        TokenLogProbs(model),
        train,
        lambda examples: pad_collate(examples, tokenizer.pad_token_id),
        loss_fn=lm_batch_loss,
        count_fn=count_loss_tokens,
        eval_data=evaluation,
    )
    metrics = trainer.fit()
    finish(trainer, trainer.unwrapped().model, tokenizer, config)
    return metrics


def loss_token_mask(labels: Any) -> Any:
    """(B, T) mask of positions whose next token carries loss (labels shifted by one)."""
    from tether.ops.logprobs import IGNORE_INDEX, shift_labels

    return shift_labels(labels) != IGNORE_INDEX


def count_loss_tokens(batch: dict) -> int:
    return int(loss_token_mask(batch["labels"]).sum())
