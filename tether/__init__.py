"""tether: align language models with human or AI preferences.

The policy stays *tethered* to its reference model by a KL penalty. See docs/architecture.md for the map:
``ops`` and ``losses`` hold the math, ``data`` and ``models`` the plumbing, ``rewards``, ``judges`` and
``envs`` the scorers, ``rollout`` the sampling, ``engine`` the offline training loop, ``algorithms`` one
readable file per stage (the online loop in ``algorithms/online.py``), ``cli`` the command line.
"""

__version__ = "0.1.0"


class TetherError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero, no traceback.

    The message names what was wrong and where (``file:line``, field).
    """
