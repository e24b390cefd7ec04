"""``tether frontier``: gold reward against KL to the reference, for several methods at several KL budgets,
over seeds, in the style of Gao et al. (2023, "Scaling laws for reward model overoptimization", Fig. 1):
methods are compared at matched KL, because a policy allowed to drift further can reach a higher (or, once
it over-optimises the reward model, lower) gold reward, and a table of methods at different KLs says little.

Each method (PPO, GRPO, RLOO, DPO) starts from the pipeline's SFT model and, for the online ones, optimises
the pipeline's reward model; its KL budget is set by β (a sweep: ``kl_coef`` of the online methods, ``beta``
of DPO). Every (method, β, seed) run is evaluated like the pipeline's policies (``eval.policy``): one sample
per held-out prompt, gold reward from the task's hidden judge, KL(π ‖ π_SFT) per response. The reference
curve is best-of-n from the SFT model picked by the reward model, at its analytic KL log n − (n − 1)/n.

Results are appended to ``frontier/frontier.jsonl`` as they come, so an interrupted sweep resumes where it
stopped; ``frontier.md`` and ``frontier.html`` (with ``frontier.png``) are written at the end.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tether import TetherError
from tether.config import FrontierConfig, PipelineConfig, build_config, to_dict
from tether.eval.aggregate import best_of_n_kl, gold_at_kl, mean_std

METHODS = ("ppo", "grpo", "rloo", "dpo")
# The frontier's PPO, under the ppo section's overrides: a separate critic, trained 150 iterations. The
# pipeline's PPO (a value head on the policy's trunk, 60 iterations, kept short for the default's time)
# drifts as far as GRPO for less gold (0.37 at 4.3 nats at β = 0.4); with its own critic PPO spends KL
# far better but moves slowly, and 150 iterations reach 0.66 at 4.4 nats (β = 0.2, seed 0).
FRONTIER_PPO = {"critic": "model", "max_steps": 150}
UPSTREAM = ("pretrain", "sft", "collect", "reward_model")


def _numbers(text: str, field: str, kind: type) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise TetherError(
            f"frontier: field '{field}': expected comma-separated numbers, got {text!r}"
        ) from None
    if not values:
        raise TetherError(f"frontier: field '{field}': expected at least one value")
    return values


def parse_settings(config: FrontierConfig) -> dict[str, list]:
    """The sweep's lists from the config's comma-separated fields, checked."""
    methods = [m.strip() for m in config.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise TetherError(
            f"frontier: field 'methods': unknown {unknown or methods}; choose among {', '.join(METHODS)}"
        )
    betas = _numbers(config.betas, "betas", float)
    if any(b <= 0 for b in betas):
        raise TetherError(
            f"frontier: field 'betas': every β must be > 0 (β = 0 has no KL budget), got {betas}"
        )
    best_of_n = _numbers(config.best_of_n, "best_of_n", int)
    if any(n < 1 for n in best_of_n):
        raise TetherError(f"frontier: field 'best_of_n': every n must be ≥ 1, got {best_of_n}")
    if 1 not in best_of_n:  # n = 1 is the SFT policy itself: the baseline of the gap each method closes
        best_of_n = [1, *best_of_n]
    kl_points = _numbers(config.kl_points, "kl_points", float)
    return {
        "methods": methods,
        "betas": betas,
        "best_of_n": best_of_n,
        "kl_points": kl_points,
        "kl_budget": config.kl_budget,
    }


def method_configs(config: FrontierConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The configs of the pipeline's upstream stages that the frontier uses, and each method's base config
    (the pipeline's defaults for its stage plus the frontier's section; RLOO is GRPO's with estimator=rloo)."""
    from tether.pipeline import stage_configs

    pipeline = PipelineConfig(
        output_dir=config.output_dir,
        task=config.task,
        seed=config.seed,
        ppo={**FRONTIER_PPO, **config.ppo},
        grpo=config.grpo,
        dpo=config.dpo,
    )
    stages = stage_configs(pipeline)
    rloo_values = {**to_dict(stages["grpo"]), "estimator": "rloo", **config.rloo}
    bases = {
        "ppo": stages["ppo"],
        "grpo": stages["grpo"],
        "rloo": build_config(type(stages["grpo"]), rloo_values, where="frontier section 'rloo'"),
        "dpo": stages["dpo"],
    }
    return {name: stages[name] for name in UPSTREAM}, bases


def run_config(base: Any, method: str, beta: float, seed: int, root: Path) -> Any:
    """``base`` at β and ``seed``, in its own folder ``root/METHOD/beta{β}/seed{seed}``."""
    knob = "beta" if method == "dpo" else "kl_coef"
    folder = root / method / f"beta{beta:g}" / f"seed{seed}"
    return dataclasses.replace(base, **{knob: beta}, seed=seed, output_dir=str(folder))


def _record(path: Path, records: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Append ``record`` to the results file (so an interrupted sweep keeps it) and to ``records``."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    records.append(record)


def run_frontier(config: FrontierConfig) -> dict[str, Any]:
    """Run the sweep (skipping runs already recorded), then write the report; return the summary."""
    from tether.engine.logging import read_metrics
    from tether.gym import get_task
    from tether.models import load_causal_lm, load_tokenizer
    from tether.pipeline import run_stages
    from tether.specs import resolve_judge

    settings = parse_settings(config)
    upstream, bases = method_configs(config)
    root = Path(config.output_dir)
    out = root / "frontier"
    out.mkdir(parents=True, exist_ok=True)
    run_stages([(name, name, c) for name, c in upstream.items()], root, set())
    sft = upstream["sft"].output_dir
    task = get_task(config.task, seed=config.seed)
    prompts = task.prompts("eval", n=config.n_policy_prompts)
    evaluation = {
        "gold": resolve_judge(f"gym:{config.task}", config.seed),
        "proxy": resolve_judge(upstream["reward_model"].output_dir),
        "reference": load_causal_lm(sft),
        "tokenizer": load_tokenizer(sft),
        "prompts": prompts,
    }
    results_path = out / "frontier.jsonl"
    records = read_metrics(results_path) if results_path.exists() else []
    done = {(r["method"], r["beta"], r["seed"]) for r in records if "method" in r}
    seeds = [config.seed + k for k in range(config.seeds)]
    # Seed-major: an interrupted sweep has every method and budget for its first seeds.
    todo = [
        (m, b, s)
        for s in seeds
        for b in settings["betas"]
        for m in settings["methods"]
        if (m, b, s) not in done
    ]
    for method, beta, seed in tqdm(todo, desc="frontier runs", unit="run"):
        _record(results_path, records, train_and_measure(bases[method], method, beta, seed, out, evaluation))
    done_n = {(r["n"], r["seed"]) for r in records if "n" in r}
    for n in settings["best_of_n"]:
        for seed in seeds:
            if (n, seed) not in done_n:
                _record(results_path, records, measure_best_of_n(n, seed, evaluation))
    summary = summarise_frontier(records, settings, seeds)
    (out / "frontier.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    from tether.report.frontier import write_frontier_report

    report = write_frontier_report(summary, records, out)
    tqdm.write(f"frontier: {len(records)} measurements in {results_path}; report {report}")
    return summary


def train_and_measure(
    base: Any, method: str, beta: float, seed: int, out: Path, evaluation: dict[str, Any]
) -> dict[str, Any]:
    """Train ``method`` at β from the SFT model with ``seed`` (unless its folder is finished), then measure
    its gold reward, proxy reward and KL to the SFT model on the held-out prompts."""
    from tether.eval.policy import evaluate_policy
    from tether.models import load_causal_lm
    from tether.pipeline import _runners, is_done

    stage_config = run_config(base, method, beta, seed, out)
    started = time.perf_counter()
    if not is_done(Path(stage_config.output_dir)):
        _runners()["dpo" if method == "dpo" else "ppo" if method == "ppo" else "grpo"](stage_config)
    seconds = time.perf_counter() - started
    metrics = evaluate_policy(
        load_causal_lm(stage_config.output_dir),
        evaluation["reference"],
        evaluation["tokenizer"],
        evaluation["gold"],
        evaluation["prompts"],
        proxy=evaluation["proxy"],
        seed=seed,
    )
    return {
        "method": method,
        "beta": beta,
        "seed": seed,
        "gold": metrics["gold"],
        "kl": metrics["kl"],
        "proxy": metrics["proxy"],
        "length": metrics["length"],
        "train_seconds": seconds,
    }


def measure_best_of_n(n: int, seed: int, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Best-of-n from the SFT model, picked by the reward model: its gold reward at the analytic KL."""
    import torch

    from tether.algorithms.rejection_sampling import best_of_n

    torch.manual_seed(seed)
    prompts = evaluation["prompts"]
    best, picked, _ = best_of_n(
        evaluation["reference"], evaluation["tokenizer"], evaluation["proxy"], prompts, n
    )
    gold = evaluation["gold"].score(prompts, best)
    return {
        "n": n,
        "seed": seed,
        "gold": sum(gold) / len(gold),
        "kl": best_of_n_kl(n),
        "proxy": sum(picked) / len(picked),
    }


def summarise_frontier(
    records: list[dict[str, Any]], settings: dict[str, list], seeds: list[int]
) -> dict[str, Any]:
    """Mean ± std over seeds of every (method, β) and best-of-n point, and each method's gold at the
    ``kl_points`` (interpolated on each seed's own curve, which starts at the SFT policy's (0, gold), then
    mean ± std over the seeds where defined)."""
    points: dict[str, dict[str, dict[str, list[float]]]] = {}
    for method in [*settings["methods"], "best_of_n"]:
        key = "n" if method == "best_of_n" else "beta"
        rows = [r for r in records if r.get("method", "best_of_n") == method and r["seed"] in seeds]
        values = sorted({r[key] for r in rows})
        points[method] = {
            f"{key}={v:g}": {
                column: list(mean_std([r[column] for r in rows if r[key] == v]))
                for column in ("gold", "kl", "proxy")
            }
            for v in values
        }
    matched: dict[str, dict[str, Any]] = {}
    for method in [*settings["methods"], "best_of_n"]:
        matched[method] = {}
        for kl in settings["kl_points"]:
            per_seed = []
            for seed in seeds:
                # Every method's curve starts at the SFT policy (β → ∞; best-of-1): KL 0, its gold.
                curve = [
                    (r["kl"], r["gold"])
                    for r in records
                    if (r.get("method", "best_of_n") == method or r.get("n") == 1) and r["seed"] == seed
                ]
                value = gold_at_kl(curve, kl)
                if value is not None:
                    per_seed.append(value)
            matched[method][f"{kl:g}"] = {
                "gold": list(mean_std(per_seed)) if per_seed else None,
                "seeds": len(per_seed),
            }
    return {
        "seeds": seeds,
        "points": points,
        "matched_kl": matched,
        "within_budget": within_budget(records, settings["methods"], seeds, settings["kl_budget"]),
        **settings,
    }


def within_budget(
    records: list[dict[str, Any]], methods: list[str], seeds: list[int], budget: float, maximum: float = 1.0
) -> dict[str, dict[int, dict[str, float] | None]]:
    """Per method and seed: the run with the best gold reward among those with KL ≤ ``budget``, and the
    share of the gap from the SFT policy's gold (best-of-1 on that seed) to ``maximum`` that it closes;
    None where no run stayed within the budget."""
    result: dict[str, dict[int, dict[str, float] | None]] = {}
    for method in methods:
        result[method] = {}
        for seed in seeds:
            base = [r["gold"] for r in records if r.get("n") == 1 and r["seed"] == seed]
            inside = [
                r for r in records if r.get("method") == method and r["seed"] == seed and r["kl"] <= budget
            ]
            if not inside or not base:
                result[method][seed] = None
                continue
            best = max(inside, key=lambda r: r["gold"])
            closed = (best["gold"] - base[0]) / (maximum - base[0]) if maximum > base[0] else float("nan")
            result[method][seed] = {
                "beta": best["beta"],
                "gold": best["gold"],
                "kl": best["kl"],
                "sft_gold": base[0],
                "gap_closed": closed,
            }
    return result
