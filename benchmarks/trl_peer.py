"""A peer on the same task: TRL's GRPOTrainer, RLOOTrainer and DPOTrainer trained from a tether pipeline's
SFT model, on its gym prompts and (GRPO, RLOO) its reward model, at the pipeline's settings, and every
trained policy measured by tether's own evaluator (``eval/policy.py: evaluate_policy``), over seeds.

Which answer does a user get from TRL, and which from tether, when both are given the same job? The
speed benchmarks (``grpo_vs_trl.py``, ``dpo_vs_trl.py``) ask how fast; this one asks how good: gold reward
(the task's hidden judge), KL(π ‖ π_SFT), proxy reward (the pipeline's reward model) and win rate against
the SFT model's samples, on the same held-out prompts, with the same sampling seed.

Usage (TRL is a benchmark dependency, never a test or runtime one)::

    .venv/bin/pip install "trl>=1.16"
    .venv/bin/tether pipeline                         # makes runs/pipeline (sft, reward_model, collect, …)
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 .venv/bin/python benchmarks/trl_peer.py \\
        --pipeline runs/pipeline --seeds 0,1,2 --methods grpo,rloo,dpo --with-tether

    # a smoke run: two iterations (optimiser steps for DPO) per run, 8 evaluation prompts
    benchmarks/trl_peer.py --pipeline /tmp/peer_smoke --seeds 0,1 --max-steps 2 --n-prompts 8 --with-tether

Options: ``--betas`` overrides the pipeline's β (``0.2`` for every method, ``grpo=0.2,dpo=0.1`` per method,
several values to sweep: ``0.05,0.1``); ``--max-steps`` overrides the pipeline's number of iterations (GRPO,
RLOO) or optimiser steps (DPO); ``--n-prompts`` sets the held-out evaluation prompts (200, as the
pipeline); ``--with-tether`` also runs tether's own stage at the same settings, and ``--no-trl`` runs
only it (TRL's runs measured already); ``--tether-rloo-objective trl`` makes tether's RLOO optimise TRL's
RLOO objective (``_peer_trl.py``) instead of the pipeline's; ``--tether-row-minibatches`` draws tether's
minibatches as TRL does, rows shuffled across prompts (``minibatch_order=rows``; GRPO, RLOO), instead of
whole groups.

Each (library, method, β, seed) trains and is evaluated in its own process (``--run``, as the other
benchmarks: no shared state, no import order effects), into ``ROOT/peer/{trl,tether}/METHOD/seedS``
(``METHOD/beta{β}/seedS`` for a β other than the pipeline's); its result is appended to
``ROOT/peer/results.jsonl`` and a re-run skips what is there. The SFT model itself is measured once per
seed (library ``sft``): its samples are what the win rates are against. ``ROOT/peer/peer.md`` gets a table
per method (library | gold | KL | win rate | proxy | train seconds, mean ± sample std over seeds) and every
seed's row. Train seconds: the whole training call, model loading and tokenisation included, imports
excluded, as in the speed benchmarks.

What each run starts from is the pipeline stage's own saved config (``ROOT/grpo/tether_config.yaml``,
``ROOT/dpo/tether_config.yaml``; ``tether.pipeline.stage_configs`` when a stage has not run), with the seed,
the output folder and the overrides above changed; RLOO is the GRPO stage's config with
``estimator=rloo`` (as ``tether frontier`` builds it).

The settings mapping tether → TRL, and what is not matched, is in ``_peer_trl.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer_report import key_of, read_results, settings_key, write_report
from _peer_trl import dpo_steps, dpo_training_pairs, resolved_beta, run_trl_dpo, run_trl_online

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("grpo", "rloo", "dpo")
LIBRARIES = ("tether", "trl")
# --tether-rloo-objective trl: TRL's RLOO objective in tether (the KL as a k1 penalty in the reward, one
# clipped ratio per whole response, the loss a mean over responses)
TRL_RLOO_OBJECTIVE = {
    "kl_in_reward": True,
    "kl_estimator": "k1",
    "policy_loss": "seq_clip",
    "loss_agg": "seq_mean_token_mean",
}


# ---------------------------------------------------------------------------------------------- settings


def parse_betas(text: str | None, methods: list[str]) -> dict[str, list[float | None]]:
    """``--betas``: per method, the β values to run (None = the pipeline's)."""
    chosen: dict[str, list[float | None]] = {m: [] for m in methods}
    common: list[float] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            method, value = item.split("=", 1)
            if method.strip() not in METHODS:
                sys.exit(f"--betas: unknown method {method!r}; choose among {', '.join(METHODS)}")
            if method.strip() in chosen:
                chosen[method.strip()].append(float(value))
        else:
            common.append(float(item))
    return {m: chosen[m] or common or [None] for m in methods}


def stage_bases(pipeline: Path) -> dict[str, Any]:
    """The pipeline's GRPO and DPO stage configs (as saved by the run; the pipeline's defaults for a stage
    that has not run), and RLOO: GRPO's with ``estimator=rloo``."""
    from tether.config import DPOConfig, PGConfig, PipelineConfig, build_config
    from tether.pipeline import stage_configs
    from tether.specs import saved_stage_config

    defaults = stage_configs(PipelineConfig(output_dir=str(pipeline)))
    bases = {}
    for name, cls in (("grpo", PGConfig), ("dpo", DPOConfig)):
        saved = saved_stage_config(str(pipeline / name))
        bases[name] = build_config(cls, saved, where=str(pipeline / name)) if saved else defaults[name]
    bases["rloo"] = dataclasses.replace(bases["grpo"], estimator="rloo")
    return bases


def run_folder(pipeline: Path, library: str, method: str, beta: float | None, seed: int) -> Path:
    name = method if beta is None else f"{method}/beta{beta:g}"
    return pipeline / "peer" / library / name / f"seed{seed}"


def run_config(
    args: argparse.Namespace, library: str, method: str, beta: float | None, seed: int, folder: Path
) -> Any:
    """The tether stage config of one run: the pipeline's, at ``seed``, in ``folder``, with the overrides."""
    base = stage_bases(Path(args.pipeline))[method]
    changes: dict[str, Any] = {
        "seed": seed,
        "output_dir": str(folder),
        "progress": False,
        "tensorboard": False,
    }
    if args.max_steps:
        changes["max_steps"] = args.max_steps
    if beta is not None:
        changes["beta" if method == "dpo" else "kl_coef"] = beta
    if library == "tether" and method == "rloo" and args.tether_rloo_objective == "trl":
        changes.update(TRL_RLOO_OBJECTIVE)
    if library == "tether" and method != "dpo" and args.tether_row_minibatches:
        changes["minibatch_order"] = "rows"
    return dataclasses.replace(base, **changes)


def task_of(config: Any) -> str:
    spec = config.prompts if hasattr(config, "prompts") else "gym:reviews"
    return spec.split(":", 1)[1] if spec.startswith("gym:") else "reviews"


# ------------------------------------------------------------------------------------------- one run


def evaluation_context(args: argparse.Namespace) -> dict[str, Any]:
    """What every policy is measured with, as the pipeline measures it: the SFT model (reference), its
    tokenizer, the gold judge, the reward model (proxy) and the held-out prompts of the pipeline's seed."""
    from tether.gym import get_task
    from tether.models import load_causal_lm, load_tokenizer
    from tether.specs import resolve_judge

    grpo = stage_bases(Path(args.pipeline))["grpo"]
    task = task_of(grpo)
    return {
        "reference": load_causal_lm(grpo.model),
        "tokenizer": load_tokenizer(grpo.model),
        "gold": resolve_judge(grpo.gold or f"gym:{task}", grpo.seed),
        "proxy": resolve_judge(grpo.reward),
        "prompts": get_task(task, seed=grpo.seed).prompts("eval", n=args.n_prompts),
    }


def measure(policy: Any, context: dict[str, Any], seed: int) -> dict[str, Any]:
    from tether.eval.policy import evaluate_policy

    metrics = evaluate_policy(
        policy,
        context["reference"],
        context["tokenizer"],
        context["gold"],
        context["prompts"],
        proxy=context["proxy"],
        seed=seed,
    )
    keep = ("gold", "kl", "proxy", "length", "stop_rate", "distinct_2", "gold_scores")
    return {k: metrics[k] for k in keep}


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """``--run LIBRARY:METHOD:SEED[:BETA]``: train (unless LIBRARY is sft) and measure; the result record."""
    library, method, seed_text, *rest = args.run.split(":")
    seed, beta = int(seed_text), (float(rest[0]) if rest and rest[0] else None)
    # Everything either library imports, off the clock for both.
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import tether.algorithms.dpo
    import tether.algorithms.policy_gradient  # noqa: F401

    if library == "trl":
        import trl  # noqa: F401

    record: dict[str, Any] = {"library": library, "method": method, "seed": seed, **settings_key(args)}
    if library == "sft":
        context = evaluation_context(args)
        return {**record, **measure(context["reference"], context, seed), "train_seconds": 0.0}

    folder = run_folder(Path(args.pipeline), library_folder(library, method, args), method, beta, seed)
    config = run_config(args, library, method, beta, seed, folder)
    if folder.exists():  # an unfinished run (a finished one is in results.jsonl and is not re-run)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    if library == "tether":
        from tether.pipeline import _runners

        _runners()["dpo" if method == "dpo" else "grpo"](config)
    elif method == "dpo":
        run_trl_dpo(config, folder)
    else:
        run_trl_online(method, config, folder)
    seconds = time.perf_counter() - started

    from tether.models import load_causal_lm, load_tokenizer

    steps = config.max_steps
    if method == "dpo" and not steps:
        steps = dpo_steps(config, len(dpo_training_pairs(config, load_tokenizer(config.model))))
    context = evaluation_context(args)
    metrics = measure(load_causal_lm(str(folder)), context, seed)
    return {
        **record,
        "beta_arg": beta,
        "beta": resolved_beta(config, method),
        "iterations": steps,
        "folder": str(folder),
        **metrics,
        "train_seconds": seconds,
    }


def library_folder(library: str, method: str, args: argparse.Namespace) -> str:
    name = library
    if library == "tether" and method == "rloo" and args.tether_rloo_objective == "trl":
        name = "tether-trlobj"
    if library == "tether" and method != "dpo" and args.tether_row_minibatches:
        name += "-rows"
    return name


# ----------------------------------------------------------------------------------------------- driver


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=str(ROOT / "runs/pipeline"), help="the pipeline folder (ROOT)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--betas", default=None, help="0.2 | grpo=0.2,dpo=0.1 | 0.05,0.1 (default: the pipeline's)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=0, help="iterations (GRPO, RLOO) / steps (DPO); 0 = pipeline's"
    )
    parser.add_argument("--n-prompts", type=int, default=200, help="held-out evaluation prompts")
    parser.add_argument("--with-tether", action="store_true", help="also run tether's own stage")
    parser.add_argument("--no-trl", action="store_true", help="only tether's runs (TRL's are there already)")
    parser.add_argument("--tether-rloo-objective", choices=("pipeline", "trl"), default="pipeline")
    parser.add_argument(
        "--tether-row-minibatches", action="store_true", help="tether's minibatches: rows shuffled, as TRL's"
    )
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := [m for m in args.method_list if m not in METHODS]:
        sys.exit(f"--methods: unknown {unknown}; choose among {', '.join(METHODS)}")
    return args


def run_all(args: argparse.Namespace) -> None:
    """Every (library, method, β, seed) not in ``results.jsonl`` yet, each in its own process; the report."""
    out = Path(args.pipeline) / "peer"
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    passthrough = [a for a in sys.argv[1:]]
    betas = parse_betas(args.betas, args.method_list)
    libraries = [*(["tether"] if args.with_tether else []), *([] if args.no_trl else ["trl"])]
    todo = [("sft", "sft", seed, None) for seed in args.seed_list]
    todo += [
        (lib, method, seed, beta)
        for method in args.method_list
        for beta in betas[method]
        for seed in args.seed_list
        for lib in (libraries if seed % 2 == 0 else libraries[::-1])  # alternate who goes first
    ]
    here = settings_key(args)
    for library, method, seed, beta in todo:
        lib = library_folder(library, method, args)
        key = (
            lib,
            method,
            seed,
            beta if library != "sft" else None,
            here["max_steps_arg"],
            here["n_prompts"],
        )
        if key in {key_of(r) for r in read_results(results)}:
            print(f"done already: {lib} {method} seed {seed} β {beta}", flush=True)
            continue
        spec = f"{library}:{method}:{seed}:{'' if beta is None else beta}"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, *passthrough, "--run", spec],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"{spec} failed:\n{done.stderr[-4000:]}")
        record = json.loads(done.stdout.strip().splitlines()[-1])
        record["library"] = lib
        record["process_seconds"] = time.perf_counter() - started
        with results.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        print(
            f"{lib} {method} seed {seed}: gold {record['gold']:.3f}, KL {record['kl']:.2f}, "
            f"proxy {record['proxy']:.3f}, train {record['train_seconds']:.1f} s "
            f"(process {record['process_seconds']:.1f} s)",
            flush=True,
        )
    report = write_report(args, read_results(results), out)
    print(report.read_text(encoding="utf-8"))


def main() -> None:
    args = parse_args()
    if args.run:  # one run, in this process; its record is the last line
        print(json.dumps(run_one(args)))
    else:
        run_all(args)


if __name__ == "__main__":
    main()
