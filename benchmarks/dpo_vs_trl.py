"""tether's DPO against TRL's DPOTrainer on the same work, each in its own process.

Same model (the pipeline's SFT model), same pairs (the pipeline's collected rankings, as pairs), same
batch of pairs, same maximum length, same number of optimiser steps, fp32, sigmoid loss, β = 0.1.
Measured: response+prompt tokens processed per second of the whole training call (tokenisation,
reference log-probs, every step and model loading included; imports excluded for both), and the peak
resident memory of the process (``ru_maxrss``), also as growth over the process's size after imports.

TRL is run twice: with its defaults (gradient checkpointing on) and with checkpointing off (its fastest).
tether is run twice: with the same i.i.d. shuffled batches as TRL, and with ``group_by_prompt=true``
(the same pairs and number of steps, each batch made of whole prompts' pairs, InstructGPT-style, so a
prompt and a response repeated across a ranking's pairs are computed once).
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
from _runs import measure  # noqa: E402

CONTENDERS = ("tether", "tether-grouped", "trl", "trl-no-checkpointing")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pairs_rows(rankings: Path, n: int) -> list[dict]:
    from tether.data.preference import rankings_to_pairs

    rows = []
    for line in rankings.read_text().splitlines():
        record = json.loads(line)
        for pair in rankings_to_pairs(record["prompt"], record["completions"], record["ranks"]):
            rows.append(
                {
                    "prompt": [{"role": "user", "content": pair.prompt}],
                    "chosen": [{"role": "assistant", "content": pair.chosen}],
                    "rejected": [{"role": "assistant", "content": pair.rejected}],
                }
            )
    return rows[:n]


def run_tether(args: argparse.Namespace, data: Path, out: Path, grouped: bool = False) -> float:
    from tether.algorithms.dpo import run_dpo
    from tether.config import DPOConfig, load_config

    config = load_config(
        DPOConfig,
        None,
        [
            f"model={args.model}",
            f"data={data}",
            f"output_dir={out}",
            f"max_steps={args.steps}",
            f"batch_size={args.batch}",
            f"max_length={args.max_length}",
            "eval_fraction=0",
            "progress=false",
            "tensorboard=false",
            f"learning_rate={args.lr}",
            "warmup_ratio=0",
            "lr_scheduler=constant",
            f"group_by_prompt={str(grouped).lower()}",
        ],
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: F401 (imports off the clock)

    import tether.algorithms.dpo  # noqa: F401

    started = time.perf_counter()
    run_dpo(config)
    return time.perf_counter() - started


def run_trl(args: argparse.Namespace, data: Path, out: Path, checkpointing: bool) -> float:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    started = time.perf_counter()  # model loading on the clock, as for tether
    model = AutoModelForCausalLM.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    dataset = datasets.Dataset.from_json(str(data))
    config = DPOConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=args.batch,
        max_length=args.max_length,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=0.1,
        report_to=[],
        save_strategy="no",
        logging_steps=10,
        gradient_checkpointing=checkpointing,
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return time.perf_counter() - started


def count_tokens(model: str, data: Path, n_pairs: int, max_length: int) -> int:
    from tether.algorithms.dpo import tokenize_pair
    from tether.data.preference import load_pairs
    from tether.data.readers import read_records
    from tether.models import load_tokenizer

    tokenizer = load_tokenizer(model)
    pairs = load_pairs(read_records(data))[:n_pairs]
    tokenized = [tokenize_pair(tokenizer, p, max_length) for p in pairs]
    return sum(len(t.chosen) + len(t.rejected) for t in tokenized if t is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "runs/pipeline/sft"))
    parser.add_argument("--rankings", default=str(ROOT / "runs/pipeline/collect/rankings.jsonl"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender (median reported)")
    parser.add_argument("--run", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "runs/bench"))
    args = parser.parse_args()
    out = Path(args.out)
    data = out / "pairs.jsonl"

    if args.run:  # one contender, in this process
        import torch  # noqa: F401
        import transformers  # noqa: F401

        baseline = rss_mb()
        if args.run.startswith("tether"):
            seconds = run_tether(args, data, out / args.run, grouped=args.run == "tether-grouped")
        else:
            seconds = run_trl(args, data, out / args.run, checkpointing=args.run == "trl")
        print(json.dumps({"seconds": seconds, "peak_rss_mb": rss_mb(), "baseline_rss_mb": baseline}))
        return

    out.mkdir(parents=True, exist_ok=True)
    n_pairs = args.steps * args.batch
    rows = pairs_rows(Path(args.rankings), n_pairs)
    if len(rows) < n_pairs:
        sys.exit(f"only {len(rows)} pairs in {args.rankings}; need {n_pairs} (fewer --steps?)")
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokens = count_tokens(args.model, data, n_pairs, args.max_length)
    results = measure(__file__, list(CONTENDERS), sys.argv[1:], args.repeat)
    for r in results.values():
        r["tokens_per_s"] = tokens / r["seconds"]
    lines = [
        f"# DPO: tether vs TRL on {args.model} — {args.steps} steps × {args.batch} pairs, "
        f"max_length {args.max_length}, {tokens} tokens",
        "",
        f"Median of {args.repeat} runs per contender, interleaved; every run's seconds in the last column.",
        "",
        "| contender | seconds | tokens/s | peak RSS (MB) | RSS growth after imports (MB) | runs (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        growth = r["peak_rss_mb"] - r["baseline_rss_mb"]
        lines.append(
            f"| {name} | {r['seconds']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {growth:.0f} "
            f"| {', '.join(map(str, r['runs']))} |"
        )
    for ours in ("tether", "tether-grouped"):
        t = results[ours]
        for name in ("trl", "trl-no-checkpointing"):
            r = results[name]
            growth = (t["peak_rss_mb"] - t["baseline_rss_mb"]) / max(
                1.0, r["peak_rss_mb"] - r["baseline_rss_mb"]
            )
            lines.append(
                f"\n{ours} vs {name}: {t['tokens_per_s'] / r['tokens_per_s']:.2f}× tokens/s, "
                f"{t['peak_rss_mb'] / r['peak_rss_mb']:.2f}× peak RSS, {growth:.2f}× RSS growth"
            )
    report = "\n".join(lines) + "\n"
    name = "" if Path(args.model).name == "sft" else f"_{Path(args.model).name}"
    (Path(__file__).parent / f"dpo_vs_trl{name}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
