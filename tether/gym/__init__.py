"""Synthetic tasks with a hidden gold reward, generated deterministically from a seed.

Each task gives a pre-training corpus (``{"text"}``), SFT conversations (``{"messages"}``) and prompts.
Each task also has a hidden ``gold_reward(prompt, completion)`` that plays the human. ``get_task(name)`` looks a
task up; ``write_task_data`` writes its files as JSONL so any stage (or another tool) can read them.
"""

from __future__ import annotations

from pathlib import Path

from tether import TetherError
from tether.gym.arithmetic import ArithmeticTask
from tether.gym.base import Task
from tether.gym.reviews import ReviewsTask

TASKS: dict[str, type[Task]] = {"reviews": ReviewsTask, "arithmetic": ArithmeticTask}
DEFAULT_TASK = "reviews"


def get_task(name: str, seed: int = 0) -> Task:
    """The gym task called ``name``, built from ``seed``."""
    if name not in TASKS:
        raise TetherError(f"unknown gym task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name](seed=seed)


def write_task_data(task: Task, out_dir: str | Path) -> dict[str, Path]:
    """Write the task's corpus, SFT train/eval sets and prompts as JSONL files under ``out_dir``."""
    from tether.data.readers import write_jsonl

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "pretrain": out / "pretrain.jsonl",
        "sft_train": out / "sft_train.jsonl",
        "sft_eval": out / "sft_eval.jsonl",
        "prompts_eval": out / "prompts_eval.jsonl",
    }
    write_jsonl(files["pretrain"], ({"text": t} for t in task.pretrain_texts()))
    write_jsonl(files["sft_train"], task.sft_examples("train"))
    write_jsonl(files["sft_eval"], task.sft_examples("eval"))
    write_jsonl(files["prompts_eval"], ({"prompt": p} for p in task.prompts("eval")))
    return files


__all__ = ["DEFAULT_TASK", "TASKS", "ArithmeticTask", "ReviewsTask", "Task", "get_task", "write_task_data"]
