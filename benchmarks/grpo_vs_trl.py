"""tether's GRPO and RLOO against TRL's GRPOTrainer and RLOOTrainer on the same work, each in its own process.

Same model (the pipeline's SFT model), same gym prompts, the same Python reward (the gym's gold reward),
B prompts × G samples per step, the same maximum completion length, temperature 1, one gradient step
per batch, β = 0.05, fp32. Measured: completions per second of the whole training call (model loading
included, imports excluded), its CPU time, and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import measure, paired_speedup  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_tether(args: argparse.Namespace, algorithm: str, out: Path) -> float:
    from tether.algorithms.policy_gradient import run_policy_gradient
    from tether.config import PGConfig, load_config

    config = load_config(
        PGConfig,
        None,
        [
            f"model={args.model}",
            "reward=gym:reviews",
            "prompts=gym:reviews",
            f"output_dir={out}",
            f"max_steps={args.steps}",
            f"batch_size={args.prompts}",
            f"group_size={args.group}",
            f"minibatch_size={args.prompts * args.group}",
            f"max_new_tokens={args.max_new_tokens}",
            f"estimator={algorithm}",
            "kl_coef=0.05",
            "learning_rate=1e-5",
            "progress=false",
            "tensorboard=false",
        ],
    )
    started = time.perf_counter()
    run_policy_gradient(config)
    return time.perf_counter() - started


def run_trl(args: argparse.Namespace, algorithm: str, out: Path) -> float:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from tether.gym import get_task

    task = get_task("reviews")

    def reward(prompts: list, completions: list, **_: object) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        asked = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
        return task.gold_rewards(asked, texts)

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = task.prompts("train", n=args.steps * args.prompts)
    dataset = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    common = dict(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group,
        max_completion_length=args.max_new_tokens,
        max_steps=args.steps,
        learning_rate=1e-5,
        beta=0.05,
        report_to=[],
        save_strategy="no",
        logging_steps=10,
        gradient_checkpointing=False,
        temperature=1.0,
    )
    if algorithm == "grpo":
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=GRPOConfig(**common),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    else:
        trainer = RLOOTrainer(
            model=model,
            reward_funcs=reward,
            args=RLOOConfig(**common),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    trainer.train()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "runs/pipeline/sft"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender (median reported)")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "runs/bench-rl"))
    args = parser.parse_args()
    out = Path(args.out)

    if args.run:  # one contender, in this process
        # Everything either contender imports, imported off the clock for both.
        from transformers.models.llama import modeling_llama  # noqa: F401
        from trl import GRPOTrainer, RLOOTrainer  # noqa: F401

        import tether.algorithms.policy_gradient  # noqa: F401

        baseline = rss_mb()
        library, algorithm = args.run.split("-")
        runner = run_tether if library == "tether" else run_trl
        cpu = time.process_time()
        seconds = runner(args, algorithm, out / args.run)
        cpu = time.process_time() - cpu
        print(
            json.dumps(
                {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": rss_mb(), "baseline_rss_mb": baseline}
            )
        )
        return

    completions = args.steps * args.prompts * args.group
    results = measure(
        __file__, ["tether-grpo", "trl-grpo", "tether-rloo", "trl-rloo"], sys.argv[1:], args.repeat
    )
    for r in results.values():
        r["samples_per_s"] = completions / r["seconds"]
    lines = [
        f"# GRPO and RLOO: tether vs TRL on {args.model} — {args.steps} steps × {args.prompts} prompts × "
        f"{args.group} samples, ≤{args.max_new_tokens} new tokens ({completions} completions)",
        "",
        f"Median of {args.repeat} runs per contender, interleaved; every run's seconds in the last column.",
        "",
        "| contender | seconds | CPU seconds | samples/s | peak RSS (MB) | runs (s) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['samples_per_s']:.1f} | "
        f"{r['peak_rss_mb']:.0f} | {', '.join(map(str, r['runs']))} |"
        for n, r in results.items()
    ]
    for algorithm in ("grpo", "rloo"):
        ours, theirs = results[f"tether-{algorithm}"], results[f"trl-{algorithm}"]
        lines.append(
            f"\n{algorithm}: tether {ours['samples_per_s'] / theirs['samples_per_s']:.2f}× samples/s "
            f"(round by round {paired_speedup(results, f'tether-{algorithm}', f'trl-{algorithm}')}), "
            f"{theirs['cpu_seconds'] / ours['cpu_seconds']:.2f}× less CPU time, "
            f"{ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}× peak RSS"
        )
    report = "\n".join(lines) + "\n"
    (Path(__file__).parent / "grpo_vs_trl.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
