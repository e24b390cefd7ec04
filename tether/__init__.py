"""tether: align language models with human or AI preferences.

The policy stays *tethered* to its reference model by a KL penalty. See docs/architecture.md for the map:
``ops`` and ``losses`` hold the math, ``data`` and ``models`` the plumbing, ``rewards``, ``judges`` and
``envs`` the scorers, ``rollout`` the sampling, ``engine`` the offline training loop, ``algorithms`` one
readable file per stage (the online loop in ``algorithms/online.py``), ``stages`` the registry of commands,
``cli`` the command line and ``api`` the same from Python::

    import tether

    metrics = tether.run("sft", model="runs/pretrain", data="gym:reviews", max_steps=20)

``run`` and ``config_for`` are imported on first use, so ``import tether`` itself loads no torch.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["TetherError", "__version__", "config_for", "run"]


class TetherError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero, no traceback.

    The message names what was wrong and where (``file:line``, field).
    """


def __getattr__(name: str) -> Any:
    # The Python API (tether/api.py) on first use: importing tether stays cheap.
    if name in ("run", "config_for"):
        from tether import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
