"""tether's reward model against TRL's RewardTrainer on the same work, each in its own process.

Same model (a tiny Llama with SmolLM2's 49k vocabulary, ``_tiny.py``, with a new one-label scalar head),
same conversational preference pairs (rankings of 4 reviews per prompt by the reviews gym task's gold
reward, split into pairs), Bradley–Terry loss, same batch of pairs, maximum length and number of
optimiser steps, fp32, constant learning rate, no evaluation. Measured: the whole process's wall time
(interpreter start, imports and exit included: what a user waits for), the training call's (model
loading, tokenisation and every step; imports excluded for both), chosen and rejected tokens per second
of each, and the peak resident memory of the process (``ru_maxrss``), also as growth over the process's
size after imports.

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
from _runs import comparison, measure, results_table, run_setup, trl_training_args  # noqa: E402
from _tiny import preference_rows, tiny_llama, tiny_llama_folder, write_jsonl  # noqa: E402

CONTENDERS = ("tether", "tether-grouped", "trl", "trl-no-checkpointing")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_tether(args: argparse.Namespace, model: Path, data: Path, out: Path, grouped: bool) -> float:
    from tether.algorithms.reward_model import run_reward_model
    from tether.config import RewardModelConfig, load_config

    config = load_config(
        RewardModelConfig,
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
            "eval_fraction=0",
            f"group_by_prompt={str(grouped).lower()}",
            "progress=false",
            "tensorboard=false",
        ],
    )
    started = time.perf_counter()
    run_reward_model(config)
    return time.perf_counter() - started


def run_trl(args: argparse.Namespace, model_dir: Path, data: Path, out: Path, checkpointing: bool) -> float:
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    started = time.perf_counter()  # model loading on the clock, as for tether
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    dataset = datasets.Dataset.from_json(str(data))
    config = RewardConfig(**trl_training_args(args, out, checkpointing))
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return time.perf_counter() - started


def count_tokens(model: Path, data: Path, max_length: int) -> int:
    from tether.algorithms.reward_model import tokenize_pairs
    from tether.data.preference import load_pairs
    from tether.data.readers import read_records
    from tether.models import load_tokenizer

    tokenizer = load_tokenizer(str(model))
    pairs = tokenize_pairs(load_pairs(read_records(data)), tokenizer, max_length)
    return sum(len(p.chosen) + len(p.rejected) for p in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
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
    parser.add_argument("--out", default=str(ROOT / "runs/bench-rm"))
    args = parser.parse_args()
    out = Path(args.out)
    data = out / "pairs.jsonl"
    model = tiny_llama_folder(out, args.hidden, args.layers, args.heads, args.intermediate)

    if args.run:  # one contender, in this process
        # What the contender imports, imported off the training call's clock (but in the process's time);
        # neither process imports the other library.
        from transformers.models.llama import modeling_llama  # noqa: F401

        if args.run.startswith("tether"):
            import tether.algorithms.reward_model
            import tether.engine.trainer  # noqa: F401
        else:
            import datasets  # noqa: F401
            from trl import RewardTrainer  # noqa: F401
        baseline = rss_mb()
        if args.run.startswith("tether"):
            seconds = run_tether(args, model, data, out / args.run, grouped=args.run == "tether-grouped")
        else:
            seconds = run_trl(args, model, data, out / args.run, checkpointing=args.run == "trl")
        print(json.dumps({"seconds": seconds, "peak_rss_mb": rss_mb(), "baseline_rss_mb": baseline}))
        return

    if args.setup:  # the model, the data and its token count, in a process of its own (see run_setup)
        tiny_llama(out, args.hidden, args.layers, args.heads, args.intermediate)
        write_jsonl(data, preference_rows(args.pairs))
        print(json.dumps({"tokens": count_tokens(model, data, args.max_length)}))
        return

    if args.pairs < args.steps * args.batch:
        sys.exit(f"--pairs {args.pairs} is fewer than one epoch of {args.steps} steps × {args.batch} pairs")
    tokens = run_setup(__file__, sys.argv[1:])["tokens"]
    results = measure(__file__, list(CONTENDERS), sys.argv[1:], args.repeat)
    lines = [
        f"# Reward model: tether vs TRL on a tiny Llama with a 49k vocabulary ({model.name}) — {args.pairs} "
        f"pairs, {args.steps} steps × {args.batch} pairs, max_length {args.max_length}, {tokens} tokens "
        "(chosen + rejected, all pairs)",
        "",
        f"Median of {args.repeat} runs per contender, interleaved; every run's seconds in the last columns "
        "(whole process; training call).",
        "",
        *results_table(results, tokens),
    ]
    for mine, name in [(m, t) for m in ("tether", "tether-grouped") for t in ("trl", "trl-no-checkpointing")]:
        lines.append(comparison(results, mine, name))
    report = "\n".join(lines) + "\n"
    (Path(__file__).parent / "rm_vs_trl.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
