"""The command line: ``tether STAGE [--config FILE] [--verbose] [key=value …]``.

Parse the arguments, build the stage's config, run it (both through the registry, ``tether.stages``),
print. Every stage takes a YAML config and ``key=value`` overrides; ``tether STAGE --help`` lists every field
with its help text and default. A stage prints its result's numbers as JSON on stdout and, on stderr, one
line saying what it wrote where. Errors in data, configs or models print one line naming the file, line
and field, and exit with status 2 — no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tether import TetherError, __version__
from tether.engine.allocator import configure_allocator

# Files of a saved model folder, reported together as "model" (tether_config.yaml marks the stage done).
MODEL_FILES = ("config.json", "generation_config.json", "special_tokens_map.json", "added_tokens.json")
MODEL_PREFIXES = ("model", "pytorch_model", "tokenizer", "chat_template", "vocab", "merges", "tether_config")


def build_parser() -> argparse.ArgumentParser:
    """``tether``'s parser: one sub-command per registered stage, its config fields in its ``--help``."""
    from tether.config import describe
    from tether.stages import STAGES, VERBOSE_ENV

    parser = argparse.ArgumentParser(prog="tether", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, stage in STAGES.items():
        sub = commands.add_parser(
            name,
            help=stage.summary,
            description=stage.summary,
            epilog="config fields (YAML keys or key=value overrides):\n"
            + describe(stage.config, dict([stage.fixed]) if stage.fixed else None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("--config", help="YAML file of field: value (overrides on the command line win).")
        sub.add_argument(
            "--verbose",
            action="store_true",
            help=f"Show transformers' warnings and loading progress bars (or set {VERBOSE_ENV}=1).",
        )
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="Set one config field.")
        if name == "pipeline":
            sub.add_argument("--from", dest="from_stage", help="Re-run this stage and every later one.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tether`` command (and of ``python -m tether``)."""
    configure_allocator()  # glibc: keep freed tensors in the heap (see engine/allocator.py); before torch
    from tether.stages import load_stage_config, run_stage

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv or ["pipeline"])  # the embedded default: `tether` alone runs the main job
    if args.command is None:
        parser.print_help()
        return 2
    overrides = list(args.overrides)
    if getattr(args, "from_stage", None):
        overrides.append(f"from_stage={args.from_stage}")
    started = time.time()
    try:
        config = load_stage_config(args.command, args.config, overrides)
        result = run_stage(args.command, config, verbose=True if args.verbose else None)
    except TetherError as err:
        print(f"tether {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tether {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        _release_process_group()
    shown = numbers_of(result)
    if shown:
        print(json.dumps(shown, indent=2, default=str), flush=True)
    wrote = written(config, started)
    if wrote and int(os.environ.get("RANK", "0")) == 0:
        print(f"tether {args.command}: wrote {wrote}", file=sys.stderr)
    return 0


def numbers_of(result: Any) -> Any:
    """The part of a stage's result worth printing: numbers, strings and mappings of them. Lists (samples,
    per-item scores, calibration tables) are left out; the stage's files hold them."""
    if isinstance(result, dict):
        kept = {str(k): numbers_of(v) for k, v in result.items() if not isinstance(v, (list, tuple))}
        return {k: v for k, v in kept.items() if v != {}}
    return result


def written(config: Any, since: float) -> str | None:
    """What the run wrote, e.g. ``runs/dpo (model, metrics.jsonl, tensorboard/)``: the entries of the config's
    ``output_dir`` changed since ``since`` (a model folder's files as "model"), or its ``output`` file."""
    output = getattr(config, "output", "")
    if output and Path(output).exists() and Path(output).stat().st_mtime >= since - 1:
        return output
    folder = Path(getattr(config, "output_dir", "") or ".")
    if not getattr(config, "output_dir", "") or not folder.is_dir():
        return None
    changed = sorted(p for p in folder.iterdir() if p.stat().st_mtime >= since - 1)
    model = [p for p in changed if p.name in MODEL_FILES or p.name.startswith(MODEL_PREFIXES)]
    others = [p.name + ("/" if p.is_dir() else "") for p in changed if p not in model]
    parts = (["model"] if any(p.name == "config.json" for p in model) else []) + others
    return f"{folder} ({', '.join(parts)})" if parts else None


def _release_process_group() -> None:
    """Under torchrun, tear the process group down before exit: gloo threads left to interpreter shutdown can
    abort a rank ("terminate called without an active exception") after the work is done. Nothing to do
    when the run never imported torch (``--help``, a config error)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
