"""tether's SFT against TRL's SFTTrainer on the same work, each in its own process.

Same model (a tiny Llama with SmolLM2's 49k vocabulary, ``_tiny.py``), same conversational
prompt–completion examples (the reviews gym task's), loss on the completion only, same batch, maximum
length and number of optimiser steps, fp32, constant learning rate, no evaluation. Measured: the whole
process's wall time (interpreter start, imports and exit included: what a user waits for), the training
call's (model loading, tokenisation and every step; imports excluded for both), completion and prompt
tokens processed per second of each, and the peak resident memory of the process (``ru_maxrss``), also as
growth over the process's size after imports.

TRL is run twice: with its defaults (gradient checkpointing on) and with checkpointing off (its fastest).
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
from _runs import comparison, measure, results_table, run_setup, trl_training_args  # noqa: E402
from _tiny import sft_rows, tiny_llama, tiny_llama_folder, write_jsonl  # noqa: E402

CONTENDERS = ("tether", "trl", "trl-no-checkpointing")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_tether(args: argparse.Namespace, model: Path, data: Path, out: Path) -> float:
    from tether.algorithms.sft import run_sft
    from tether.config import SFTConfig, load_config

    config = load_config(
        SFTConfig,
        None,
        [
            f"model={model}",
            f"data={data}",
            f"output_dir={out}",
            f"max_steps={args.steps}",
            f"batch_size={args.batch}",
            f"max_length={args.max_length}",
            f"learning_rate={args.lr}",
            "warmup_ratio=0",
            "lr_scheduler=constant",
            "progress=false",
            "tensorboard=false",
        ],
    )
    started = time.perf_counter()
    run_sft(config)
    return time.perf_counter() - started


def run_trl(args: argparse.Namespace, model_dir: Path, data: Path, out: Path, checkpointing: bool) -> float:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    started = time.perf_counter()  # model loading on the clock, as for tether
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = datasets.Dataset.from_json(str(data))
    config = SFTConfig(**trl_training_args(args, out, checkpointing))
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return time.perf_counter() - started


def count_tokens(model: Path, data: Path, max_length: int) -> int:
    from tether.algorithms.sft import tokenize_examples
    from tether.data.formats import parse_sft
    from tether.data.readers import read_records
    from tether.models import load_tokenizer

    tokenizer = load_tokenizer(str(model))
    examples = [parse_sft(r) for r in read_records(data)]
    return sum(len(t) for t in tokenize_examples(examples, tokenizer, max_length))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--hidden", type=int, default=128, help="the tiny Llama's width")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender (median reported)")
    parser.add_argument("--run", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "runs/bench-sft"))
    args = parser.parse_args()
    out = Path(args.out)
    data = out / "sft.jsonl"
    model = tiny_llama_folder(out, args.hidden, args.layers, args.heads, args.intermediate)

    if args.run:  # one contender, in this process
        # What the contender imports, imported off the training call's clock (but in the process's time);
        # neither process imports the other library.
        from transformers.models.llama import modeling_llama  # noqa: F401

        if args.run == "tether":
            import tether.algorithms.sft
            import tether.engine.trainer  # noqa: F401
        else:
            import datasets  # noqa: F401
            from trl import SFTTrainer  # noqa: F401
        baseline = rss_mb()
        if args.run == "tether":
            seconds = run_tether(args, model, data, out / args.run)
        else:
            seconds = run_trl(args, model, data, out / args.run, checkpointing=args.run == "trl")
        print(json.dumps({"seconds": seconds, "peak_rss_mb": rss_mb(), "baseline_rss_mb": baseline}))
        return

    if args.setup:  # the model, the data and its token count, in a process of its own (see run_setup)
        tiny_llama(out, args.hidden, args.layers, args.heads, args.intermediate)
        write_jsonl(data, sft_rows(args.steps * args.batch))
        print(json.dumps({"tokens": count_tokens(model, data, args.max_length)}))
        return

    tokens = run_setup(__file__, sys.argv[1:])["tokens"]
    results = measure(__file__, list(CONTENDERS), sys.argv[1:], args.repeat)
    lines = [
        f"# SFT: tether vs TRL on a tiny Llama with a 49k vocabulary ({model.name}) — {args.steps} steps × "
        f"{args.batch} examples, max_length {args.max_length}, {tokens} tokens",
        "",
        f"Median of {args.repeat} runs per contender, interleaved; every run's seconds in the last columns "
        "(whole process; training call).",
        "",
        *results_table(results, tokens),
    ]
    for name in ("trl", "trl-no-checkpointing"):
        lines.append(comparison(results, "tether", name))
    report = "\n".join(lines) + "\n"
    (Path(__file__).parent / "sft_vs_trl.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
