"""The Python API: ``tether.run(STAGE, [CONFIG_FILE], **fields)`` runs one stage as the command line would.

``tether.run("dpo", model="runs/sft", data="pairs.jsonl", beta=0.1)`` is ``tether dpo model=runs/sft
data=pairs.jsonl beta=0.1``: the same registry (``tether.stages``), the same checks of every field (an
unknown key names the closest valid one, values are converted and bounds checked, exactly as for YAML), the
same fixed fields (``tether.run("rloo", estimator="grpo")`` is refused), and the same function. It returns
the stage's result dict (metrics) and raises ``TetherError`` with the one-line message the CLI would print.
``tether.config_for`` builds the config without running it.

Nothing heavy is imported until a stage runs, so ``import tether`` stays cheap.
"""

from __future__ import annotations

from typing import Any


def config_for(stage: str, config_file: str | None = None, /, **fields: Any) -> Any:
    """The config of ``stage`` (a command name: ``"sft"``, ``"reward-model"`` or ``"reward_model"``, …) from
    an optional YAML ``config_file`` and keyword ``fields`` (keywords win), checked as the CLI checks it."""
    from tether.config import read_values
    from tether.stages import STAGES, get_stage, stage_config

    name = _command(stage, STAGES)
    values, where = read_values(get_stage(name).config, config_file) if config_file else ({}, {})
    values.update(fields)
    where.update({key: f"tether.run({stage!r})" for key in fields})
    return stage_config(name, values, where)


def run(stage: str, config_file: str | None = None, /, **fields: Any) -> dict[str, Any]:
    """Run ``stage`` with the config :func:`config_for` builds from the same arguments; return its result.
    Transformers' warnings and progress bars are silenced unless ``TETHER_VERBOSE=1``."""
    from tether.stages import STAGES, run_stage

    return run_stage(_command(stage, STAGES), config_for(stage, config_file, **fields))


def _command(stage: str, stages: dict) -> str:
    """The registered name of ``stage``: Python callers may write ``reward_model`` for ``reward-model``."""
    return stage if stage in stages else stage.replace("_", "-")
