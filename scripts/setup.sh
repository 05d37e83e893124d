#!/usr/bin/env bash
# Create .venv and install lpray with its test tools. Safe to rerun.
# torch is pinned to the release this lab machine image carries (no multi-GB download); on other
# machines pip fetches the same release from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import lpray, torch, ray, nvidia.dali, av; print('lpray', lpray.__version__, '| torch', torch.__version__, '| ray', ray.__version__)"
