#!/usr/bin/env bash
# The GPU check (tether/doctor/): SFT, DPO and GRPO steps on a 0.5B Llama in bf16 with tokens/s and MFU,
# FSDP2 on `tether sft` (1 process, and 2 with two GPUs) reloaded by plain transformers, the test suite
# with CUDA, and `tether pipeline`, within --budget seconds (default 420). Writes one Markdown table to
# --out (default $OUT/gpu_check.md, else ./gpu_check.md) and prints it; exits 0 with one line when no
# CUDA device is present.
#
# Needs: torch (CUDA build), transformers, accelerate, peft, safetensors, tokenizers, pyyaml, tqdm;
# pytest for the test row (pytest-xdist to run it in parallel); matplotlib and tensorboard for the
# pipeline row. Nothing is downloaded. Packages the machine lacks travel as wheels in .whl/ at the
# repository's root: they are installed with `pip install --no-index --no-deps` into a folder put on
# PYTHONPATH (so bring each dependency too).
#
# Usage: bash scripts/gpu_check.sh [--out FILE] [--budget SECONDS] [--only 1,3]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  SITE="${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/tether-gpu-check-site}"
  echo "gpu_check: installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into $SITE"
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" -m tether.doctor "$@"
