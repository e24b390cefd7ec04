"""What every stage does the same way: find its data, load or adapt its model, save its output."""

from __future__ import annotations

from typing import Any

from tether.config import ModelConfig, save_config
from tether.data.readers import Record, read_records
from tether.gym import get_task
from tether.models import apply_lora, load_causal_lm, load_tokenizer, save_model
from tether.models.forward import TokenLogProbs
from tether.models.lora import is_peft_model
from tether.rewards import GYM_PREFIX, VERIFIABLE_PREFIX


def load_records(spec: str, part: str, seed: int = 0) -> list[Record]:
    """Records of a data spec: a file/folder, or ``gym:TASK`` whose ``part`` is one of
    ``pretrain``, ``sft_train``, ``sft_eval``, ``sft_test``."""
    if not spec.startswith(GYM_PREFIX):
        return read_records(spec)
    task = get_task(spec[len(GYM_PREFIX) :], seed=seed)
    if part == "pretrain":
        rows = [{"text": text} for text in task.pretrain_texts()]
    else:
        rows = task.sft_examples(part.removeprefix("sft_"))
    return [Record(row, f"{spec}/{part}", index) for index, row in enumerate(rows, start=1)]


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


def resolve_judge(spec: str, seed: int = 0, trust_remote_code: bool = False) -> Any:
    """A judge from a spec: ``gym:TASK`` (the task's gold reward), ``verifiable:REWARD:W,…`` (the reward
    library, see ``tether.rewards``), ``module:function``, a judge YAML file (an LLM judge, see
    ``JudgeConfig``), or a reward-model folder."""
    from pathlib import Path

    from tether.judges import FunctionJudge, RewardModelJudge, import_function
    from tether.models.reward import load_reward_model

    if spec.startswith(GYM_PREFIX):
        task = get_task(spec[len(GYM_PREFIX) :], seed=seed)
        return FunctionJudge(task.gold_rewards, name=f"gold:{task.name}")
    if spec.startswith(VERIFIABLE_PREFIX):
        from tether.rewards import resolve_reward

        return resolve_reward(spec, seed)
    if spec.endswith((".yaml", ".yml")):
        return load_llm_judge(spec)
    if ":" in spec and not Path(spec).exists():
        return FunctionJudge(import_function(spec), name=spec)
    model = load_reward_model(spec, trust_remote_code)
    tokenizer = load_tokenizer(spec, trust_remote_code)
    trained = saved_stage_config(spec)
    if trained.get("pairwise"):  # a two-argument preference model: read its inputs as it was trained
        from tether.judges.preference_model import PreferenceModelJudge

        return PreferenceModelJudge(model, tokenizer, max_length=int(trained.get("max_length", 256)))
    return RewardModelJudge(model, tokenizer)


def saved_stage_config(folder: str) -> dict:
    """The ``tether_config.yaml`` a stage saved beside its model ({} when there is none)."""
    from pathlib import Path

    import yaml

    saved = Path(folder) / "tether_config.yaml"
    if not saved.is_file():
        return {}
    return yaml.safe_load(saved.read_text(encoding="utf-8")) or {}


def load_llm_judge(path: str, overrides: list[str] | None = None) -> Any:
    """The pairwise or pointwise LLM judge a ``JudgeConfig`` YAML file describes."""
    from tether.config import JudgeConfig, load_config
    from tether.judges.constitution import load_constitution
    from tether.judges.llm import PairwiseLLMJudge, PointwiseLLMJudge

    config = load_config(JudgeConfig, path, overrides)
    constitution = load_constitution(config.constitution)
    model = load_causal_lm(config.model, config.trust_remote_code).requires_grad_(False)
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    common = {
        "principle_mode": config.principle_mode,
        "chat": config.chat_template,
        "batch_size": config.batch_size,
        "seed": config.seed,
    }
    if config.kind == "pairwise":
        return PairwiseLLMJudge(model, tokenizer, constitution, swap=config.swap, **common)
    return PointwiseLLMJudge(model, tokenizer, constitution, **common)
