"""Multi-turn tool use on the embedded default, end to end: pre-train the tiny model on the arithmetic
corpus, fine-tune it on calculator transcripts (tether.envs.calculator.tool_use_transcripts), measure it
in the calculator environment, run GRPO with the environment, and measure again on held-out prompts.

    .venv/bin/python scripts/tool_use_demo.py [OUTPUT_DIR] [GRPO_STEPS]

Prints one table (success rate = exact answer, tool-call rate = episodes with a well-formed call) and
writes it to OUTPUT_DIR/tool_use.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

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


def measure(folder: Path, prompts: list[str]) -> dict[str, float]:
    return episode_metrics(
        load_causal_lm(str(folder)),
        load_tokenizer(str(folder)),
        prompts,
        resolve_env("calculator"),
        max_turns=3,
    )


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tool_use")
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    common = {"progress": False, "tensorboard": False}
    times = {}
    started = time.perf_counter()
    if not (root / "pretrain" / "config.json").exists():
        run_pretrain(PretrainConfig(data="gym:arithmetic", output_dir=str(root / "pretrain"), **common))
    times["pretrain"] = time.perf_counter() - started
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
    held_out = get_task("arithmetic").prompts("test", n=128)
    before = measure(root / "sft", held_out)
    started = time.perf_counter()
    run_policy_gradient(
        PGConfig(
            model=str(root / "sft"),
            output_dir=str(root / "grpo"),
            prompts="gym:arithmetic",
            env="calculator",
            max_turns=3,
            max_new_tokens=24,
            max_steps=steps,
            batch_size=8,
            group_size=4,
            learning_rate=1e-4,
            kl_coef=0.02,
            **common,
        )
    )
    times["grpo"] = time.perf_counter() - started
    after = measure(root / "grpo", held_out)
    lines = [
        "| policy | success rate | tool-call rate | reward | turns |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {m['success_rate']:.1%} | {m['tool_call_rate']:.1%} | {m['reward']:.3f} | {m['turns']:.2f} |"
            for name, m in (("sft", before), ("grpo", after))
        ),
        "",
        "Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()),
    ]
    (root / "tool_use.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"sft": before, "grpo": after, "seconds": times}))


if __name__ == "__main__":
    main()
