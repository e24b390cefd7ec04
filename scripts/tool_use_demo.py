"""Verifiable rewards and multi-turn tool use on the embedded default, end to end. Pre-train the tiny model
on the arithmetic corpus, then:

1. single turn: SFT on the task's answers, GRPO with ``reward=verifiable:exact_match[answers=gym:arithmetic]``;
2. tool use: SFT on calculator transcripts (``tether.envs.calculator.tool_use_transcripts``), GRPO with
   ``env=calculator``;

each measured on the same held-out prompts before and after GRPO (one sampled answer or episode each).

    .venv/bin/python scripts/tool_use_demo.py [OUTPUT_DIR] [GRPO_STEPS]

Prints one table (accuracy = exact answer; tool-call rate = episodes with a well-formed call) and writes
it to OUTPUT_DIR/tool_use.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from tether.algorithms.policy_gradient import run_policy_gradient
from tether.algorithms.pretrain import run_pretrain
from tether.algorithms.sft import run_sft
from tether.config import PGConfig, PretrainConfig, SFTConfig
from tether.data.readers import write_jsonl
from tether.envs import resolve_env
from tether.envs.calculator import tool_use_transcripts
from tether.eval.episodes import episode_metrics
from tether.gym import get_task
from tether.models import load_causal_lm, load_tokenizer
from tether.rollout.experience import sample


def measure(folder: Path, prompts: list[str]) -> dict[str, float]:
    return episode_metrics(
        load_causal_lm(str(folder)),
        load_tokenizer(str(folder)),
        prompts,
        resolve_env("calculator"),
        max_turns=3,
    )


def accuracy(folder: Path, prompts: list[str]) -> dict[str, float]:
    """Exact-match accuracy of one sampled answer per prompt (seed 0)."""
    torch.manual_seed(0)
    model, tokenizer = load_causal_lm(str(folder)), load_tokenizer(str(folder))
    experience = sample(model, tokenizer, prompts, 1, max_new_tokens=24)
    task = get_task("arithmetic")
    correct = [task.gold_reward(p, c) for p, c in zip(prompts, experience.completions)]
    return {"success_rate": sum(correct) / len(correct)}


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tool_use")
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    common = {"progress": False, "tensorboard": False}
    times = {}
    started = time.perf_counter()
    if not (root / "pretrain" / "config.json").exists():
        run_pretrain(PretrainConfig(data="gym:arithmetic", output_dir=str(root / "pretrain"), **common))
    times["pretrain"] = time.perf_counter() - started
    held_out = get_task("arithmetic").prompts("test", n=128)
    grpo = {"max_steps": steps, "batch_size": 8, "group_size": 4, "learning_rate": 1e-4, "kl_coef": 0.02}
    rows = []
    # 1. Single turn, verifiable reward.
    started = time.perf_counter()
    run_sft(
        SFTConfig(
            model=str(root / "pretrain"), data="gym:arithmetic", output_dir=str(root / "sft_plain"), **common
        )
    )
    times["sft_plain"] = time.perf_counter() - started
    rows.append(("sft (answers)", accuracy(root / "sft_plain", held_out)))
    started = time.perf_counter()
    run_policy_gradient(
        PGConfig(
            model=str(root / "sft_plain"),
            output_dir=str(root / "grpo_plain"),
            prompts="gym:arithmetic",
            reward="verifiable:exact_match[answers=gym:arithmetic]",
            max_new_tokens=24,
            **grpo,
            **common,
        )
    )
    times["grpo_plain"] = time.perf_counter() - started
    rows.append(("grpo, exact_match reward", accuracy(root / "grpo_plain", held_out)))
    # 2. Tool use.
    write_jsonl(root / "tools.jsonl", tool_use_transcripts("train", n=1000))
    started = time.perf_counter()
    run_sft(
        SFTConfig(
            model=str(root / "pretrain"),
            data=str(root / "tools.jsonl"),
            eval_data="",
            output_dir=str(root / "sft"),
            num_epochs=2,
            **common,
        )
    )
    times["sft"] = time.perf_counter() - started
    rows.append(("sft (calculator transcripts)", measure(root / "sft", held_out)))
    started = time.perf_counter()
    run_policy_gradient(
        PGConfig(
            model=str(root / "sft"),
            output_dir=str(root / "grpo"),
            prompts="gym:arithmetic",
            env="calculator",
            max_turns=3,
            max_new_tokens=24,
            **grpo,
            **common,
        )
    )
    times["grpo"] = time.perf_counter() - started
    rows.append(("grpo, env=calculator", measure(root / "grpo", held_out)))

    def cell(metrics: dict[str, float], key: str, form: str) -> str:
        return format(metrics[key], form) if key in metrics else "–"

    lines = [
        "| policy | accuracy | tool-call rate | turns |",
        "|---|---|---|---|",
        *(
            f"| {name} | {m['success_rate']:.1%} | {cell(m, 'tool_call_rate', '.1%')} | {cell(m, 'turns', '.2f')} |"
            for name, m in rows
        ),
        "",
        "Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()),
    ]
    (root / "tool_use.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"rows": dict(rows), "seconds": times}))


if __name__ == "__main__":
    main()
