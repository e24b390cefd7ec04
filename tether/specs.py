"""Spec resolvers: the strings a user writes for data, prompts and judges, turned into objects.

This module owns every spec parser that more than one stage or command reads:

- data (``data=…``): a file or folder (``data/readers.py``) or ``gym:TASK`` — :func:`load_records`;
- prompts (``prompts=…``): a gym task's prompts or the ``prompt`` field of a file's records —
  :func:`load_prompts`, and the matching reference answers, :func:`load_reference_answers`;
- judges and rewards (``judge=…``, ``reward=…``, ``gold=…``): ``gym:TASK``, ``verifiable:…``, a judge YAML
  file (an LLM judge), ``module:function`` or a reward-model folder — :func:`resolve_judge`,
  :func:`load_llm_judge`, :func:`saved_stage_config`.

It sits above the scorers (``rewards``, ``judges``, ``envs``) and the plumbing (``data``, ``models``,
``gym``), and below everything that samples, measures or trains (``rollout``, ``eval``, ``algorithms``), so
that evaluating a model does not import training code. The prefixes themselves (``gym:``, ``verifiable:``)
are defined once, in ``tether.rewards``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tether.data.preference import text_or_messages
from tether.data.readers import Record, read_records
from tether.gym import get_task
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


def load_prompts(spec: str, n: int, seed: int, split: str = "train") -> list:
    """``n`` prompts: a gym task's prompts of ``split``, or the ``prompt`` field of a file's records (a
    non-empty string or a list of messages)."""
    if spec.startswith(GYM_PREFIX):
        return get_task(spec[len(GYM_PREFIX) :], seed=seed).prompts(split, n=n)
    prompts = []
    for record in load_records(spec, "prompts", seed)[:n]:
        value = text_or_messages(record, "prompt")
        if not value:
            raise record.error("prompt", "expected a non-empty string or a list of messages")
        prompts.append(value)
    return prompts


def load_reference_answers(spec: str, n: int, seed: int, split: str = "train") -> list[str | None]:
    """The reference answer of each of the ``n`` prompts ``load_prompts(spec, n, seed, split)`` reads, in
    the same order: a gym task's ``reference_answer`` of the prompt, or a record's ``answer`` field (None
    where there is none)."""
    if spec.startswith(GYM_PREFIX):
        task = get_task(spec[len(GYM_PREFIX) :], seed=seed)
        return [task.reference_answer(prompt) for prompt in task.prompts(split, n=n)]
    answers = []
    for record in load_records(spec, "prompts", seed)[:n]:
        value = record.data.get("answer")
        answers.append(None if value is None else str(value))
    return answers


def resolve_judge(spec: str, seed: int = 0, trust_remote_code: bool = False) -> Any:
    """A judge from a spec: ``gym:TASK`` (the task's gold reward), ``verifiable:REWARD:W,…`` (the reward
    library, see ``tether.rewards``), ``module:function``, a judge YAML file (an LLM judge, see
    ``JudgeConfig``), or a reward-model folder."""
    from tether.judges import FunctionJudge, RewardModelJudge, import_function
    from tether.models import load_tokenizer
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
    from tether.models import load_causal_lm, load_tokenizer

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
