"""The registry of commands: one table, ``STAGES``, from a command's name to its config class, the function
that runs it and a one-line summary. The command line (``cli.py``) and the Python API (``api.py``) both
read it, so ``tether dpo beta=0.1`` and ``tether.run("dpo", beta=0.1)`` build the same config and run the
same function.

A command may fix one config field to its own values: ``tether rloo`` runs ``estimator=rloo``, ``tether
brain`` runs ``method=brain``. Left unset, the field takes the command's first value; a conflicting value
is refused with one line naming the command that runs it (:func:`stage_config`), never silently replaced.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tether import TetherError
from tether.config import (
    BestOfNConfig,
    CollectConfig,
    CompareConfig,
    ConfigError,
    CritiqueReviseConfig,
    DistributionMatchingConfig,
    DPOConfig,
    EvalConfig,
    FrontierConfig,
    IterativeDPOConfig,
    JudgeAgreementConfig,
    KTOConfig,
    NashMDConfig,
    OnlineDPOConfig,
    PGConfig,
    PipelineConfig,
    PPOConfig,
    PretrainConfig,
    RewardModelConfig,
    RFTConfig,
    ScoreConfig,
    SFTConfig,
    build_config,
    read_values,
)
from tether.engine.logging import check_trackers

VERBOSE_ENV = "TETHER_VERBOSE"


@dataclass(frozen=True)
class Stage:
    """One command: its config class, the function that runs it (config → result dict), as
    ``"module:function"``, and its summary. ``fixed`` is (field, the values this command runs), the first
    value the command's default.

    The function is imported when the command runs (``run``), not when the table is read: the config
    classes are light, the training code imports torch and transformers (5 s), and ``tether --help``, a
    stage's ``--help`` and a config error need only the configs. ``tests/test_stages.py`` imports every
    function named here."""

    config: type
    runner: str
    summary: str
    fixed: tuple[str, tuple[str, ...]] | None = None

    @property
    def run(self) -> Callable[[Any], dict[str, Any]]:
        """The function that runs this command (imported on first use)."""
        module, function = self.runner.split(":")
        return getattr(importlib.import_module(module), function)


STAGES: dict[str, Stage] = {
    "pipeline": Stage(
        PipelineConfig, "tether.pipeline:run_pipeline", "Run the whole pipeline on a gym task (the main job)."
    ),
    "frontier": Stage(
        FrontierConfig,
        "tether.frontier:run_frontier",
        "Gold reward against KL for PPO, GRPO, RLOO and DPO at several β over seeds, best-of-n as reference.",
    ),
    "pretrain": Stage(
        PretrainConfig,
        "tether.algorithms.pretrain:run_pretrain",
        "Pre-train a causal LM by next-token prediction.",
    ),
    "sft": Stage(
        SFTConfig,
        "tether.algorithms.sft:run_sft",
        "Supervised fine-tuning with loss on response tokens only.",
    ),
    "collect": Stage(
        CollectConfig,
        "tether.algorithms.collect:run_collect",
        "Sample K responses per prompt, rank them with a judge, write pairs.",
    ),
    "reward-model": Stage(
        RewardModelConfig,
        "tether.algorithms.reward_model:run_reward_model",
        "Train a Bradley–Terry reward model on preferences.",
    ),
    "dpo": Stage(
        DPOConfig,
        "tether.algorithms.dpo:run_dpo",
        "Offline preference optimisation: DPO and its family (IPO, SimPO, ORPO, …).",
    ),
    "kto": Stage(
        KTOConfig,
        "tether.algorithms.kto:run_kto",
        "KTO on thumbs-up/down data (or rankings: best up, worst down).",
    ),
    "ppo": Stage(
        PPOConfig,
        "tether.algorithms.ppo:run_ppo",
        "PPO with a value head: reward − β·KL, GAE, clipped ratio, K epochs.",
    ),
    "reinforce": Stage(
        PGConfig,
        "tether.algorithms.policy_gradient:run_policy_gradient",
        "REINFORCE with a moving-average baseline (or estimator=reinforce_pp: REINFORCE++).",
        ("estimator", ("reinforce_baseline", "reinforce_pp")),
    ),
    "rloo": Stage(
        PGConfig,
        "tether.algorithms.policy_gradient:run_policy_gradient",
        "REINFORCE leave-one-out over G samples per prompt.",
        ("estimator", ("rloo",)),
    ),
    "grpo": Stage(
        PGConfig,
        "tether.algorithms.policy_gradient:run_policy_gradient",
        "GRPO: group-normalised advantages, KL as a loss term (or estimator=dr_grpo: Dr. GRPO).",
        ("estimator", ("grpo", "dr_grpo")),
    ),
    "dpg": Stage(
        DistributionMatchingConfig,
        "tether.algorithms.distribution_matching:run_distribution_matching",
        "DPG: fit π to p* ∝ π_ref·exp(r/β).",
        ("method", ("dpg",)),
    ),
    "brain": Stage(
        DistributionMatchingConfig,
        "tether.algorithms.distribution_matching:run_distribution_matching",
        "BRAIn: DPG with a self-normalised baseline.",
        ("method", ("brain",)),
    ),
    "nash-md": Stage(
        NashMDConfig,
        "tether.algorithms.nash_md:run_nash_md",
        "Nash-MD: preference self-play regularised towards the reference.",
    ),
    "online-dpo": Stage(
        OnlineDPOConfig,
        "tether.algorithms.online_dpo:run_online_dpo",
        "Online DPO: fresh pairs from the policy, labelled by a judge.",
    ),
    "iterative-dpo": Stage(
        IterativeDPOConfig,
        "tether.algorithms.online_dpo:run_iterative_dpo",
        "Iterative DPO: rounds of sampling from the current policy, judge labels, and DPO.",
    ),
    "best-of-n": Stage(
        BestOfNConfig,
        "tether.algorithms.rejection_sampling:run_best_of_n",
        "Best-of-n sampling with a judge; reports its analytic KL.",
    ),
    "rft": Stage(
        RFTConfig,
        "tether.algorithms.rejection_sampling:run_rft",
        "Rejection-sampling fine-tuning: rounds of best-of-n selection and SFT.",
    ),
    "critique-revise": Stage(
        CritiqueReviseConfig,
        "tether.algorithms.constitutional:run_critique_revise",
        "Constitutional AI: answer, self-critique by a principle, revise; the revisions become SFT data.",
    ),
    "judge-agreement": Stage(
        JudgeAgreementConfig,
        "tether.eval.commands:run_judge_agreement",
        "A judge's agreement with gold labels on held-out pairs, with and without order swapping.",
    ),
    "compare": Stage(
        CompareConfig,
        "tether.eval.commands:run_compare",
        "Win rate, gold reward and KL of a policy against its reference.",
    ),
    "score": Stage(
        ScoreConfig,
        "tether.eval.commands:run_score",
        "Score (prompt, completion) records with a reward model or judge.",
    ),
    "evaluate": Stage(
        EvalConfig, "tether.eval.commands:run_evaluate", "Evaluate a model on a gym task's held-out data."
    ),
}


def get_stage(name: str) -> Stage:
    """The registered command ``name``; an unknown name is a one-line error naming the closest one."""
    if name in STAGES:
        return STAGES[name]
    close = difflib.get_close_matches(name, list(STAGES), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; choose one of {', '.join(STAGES)}"
    raise TetherError(f"unknown stage '{name}'{hint}")


def stage_config(name: str, values: Mapping[str, Any], where: Mapping[str, str] | str = "config") -> Any:
    """The config of command ``name`` from raw ``values`` (checked as YAML values are: types, bounds,
    unknown keys), with the command's fixed field set or checked. ``where`` names each value's source."""
    stage = get_stage(name)
    values = dict(values)
    if stage.fixed is not None:
        field, runs = stage.fixed
        if field not in values:
            values[field] = runs[0]
        elif values[field] not in runs:
            origin = where.get(field, "config") if isinstance(where, Mapping) else where
            raise ConfigError(f"{origin}: {_conflict(name, field, runs, values[field])}")
    return build_config(stage.config, values, dict(where) if isinstance(where, Mapping) else where)


def _conflict(name: str, field: str, runs: tuple[str, ...], value: Any) -> str:
    """Why command ``name`` refuses ``field=value``, and which command runs it."""
    message = f"tether {name} runs {field}={' or '.join(runs)}; got {field}={value}"
    other = next(
        (n for n, s in STAGES.items() if s.fixed and s.fixed[0] == field and value in s.fixed[1]), None
    )
    return message + (f" (use `tether {other}`)" if other else "")


def load_stage_config(name: str, config_path: str | None = None, overrides: list[str] | None = None) -> Any:
    """The config of command ``name`` from an optional YAML file plus ``key=value`` overrides."""
    values, where = read_values(get_stage(name).config, config_path, overrides)
    return stage_config(name, values, where)


def verbose_from_env() -> bool:
    """Whether ``TETHER_VERBOSE`` asks for the libraries' own warnings and progress bars."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def quiet_libraries(verbose: bool = False) -> None:
    """Unless ``verbose``: only errors from transformers' logger (no generation-flag warnings on each
    ``generate``, no config notices) and none of its progress bars (loading and writing weights). tether's
    own progress bars are not affected."""
    if verbose:
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run_stage(name: str, config: Any, verbose: bool | None = None) -> dict[str, Any]:
    """Run command ``name`` on a config built by :func:`stage_config`; return its result. ``verbose`` None
    reads ``TETHER_VERBOSE``."""
    stage = get_stage(name)
    if not isinstance(config, stage.config):
        raise TetherError(f"tether {name} takes a {stage.config.__name__}, got {type(config).__name__}")
    if isinstance(getattr(config, "report_to", None), str):
        check_trackers(config.report_to)  # before anything is loaded
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries(verbose_from_env() if verbose is None else verbose)
    return stage.run(config)
