#!/usr/bin/env bash
# Create the virtual environment of the peer, Lightning Pose 2.4.3, OUTSIDE lpray's repository.
#
# Why a script and not `pip install lightning-pose==2.4.3`: that fails here. Its requirement
# `nvidia-dali-cuda110` is a placeholder package whose install downloads from a host this machine
# cannot reach, so lightning-pose goes in with --no-deps and its other requirements are listed
# below by hand. torch/torchvision are pinned to the versions lpray uses (2.14.1 / 0.29.1), which lie
# on this machine's local package index, so nothing large comes over the network. lightning-pose
# never becomes a dependency of lpray: it lives only in this separate venv.
#
# Usage: bash bench/peers/install_peer.sh [VENV_DIR]   (default /work/peer-venv)
set -euo pipefail

VENV="${1:-/work/peer-venv}"
PYTHON="${PYTHON:-python3.11}"
LP_VERSION="2.4.3"

# The requirements of lightning-pose 2.4.3 (from its wheel's METADATA), less:
#   - nvidia-dali-cuda110: the unreachable placeholder (DALI is only used for GPU video decoding;
#     without it LP falls back to OpenCV for prediction and refuses unsupervised losses on CPU);
#   - torch/torchvision: installed first, pinned;
#   - the `dev` extra (Sphinx, pytest, ...).
# lightning/pytorch-lightning are capped below 2.6 by LP itself (lpray uses 2.6.x: another reason
# for a separate venv). `imaug` is a maintained fork that provides the `imgaug` module.
LP_REQUIREMENTS=(
  "aniposelib"
  "h5py"
  "hydra-core"
  "imaug"
  "jaxtyping"
  "kornia"
  "lightning>=2.5.0,<2.6.0"
  "matplotlib"
  "moviepy>=2.0.0"
  "numpy>=2.0.0"
  "opencv-python-headless"
  "pandas>=2.2.2"
  "pillow"
  "pytorch-lightning>=2.5.0,<2.6.0"
  "safetensors"
  "scikit-learn>=1.5.0"
  "tensorboard<3.0.0"
  "transformers>=4.57.5"
)
# The benchmark driver (bench/peers/run.py) measures the peer's process tree with psutil.
EXTRA_REQUIREMENTS=("psutil")

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[install_peer] creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip

CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
printf 'torch==2.14.1\ntorchvision==0.29.1\n' >"$CONSTRAINTS"

echo "[install_peer] torch==2.14.1 torchvision==0.29.1"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "torch==2.14.1" "torchvision==0.29.1"

echo "[install_peer] lightning-pose==$LP_VERSION --no-deps"
"${PIP[@]}" install -q --no-deps "lightning-pose==$LP_VERSION"

echo "[install_peer] lightning-pose requirements (DALI placeholder skipped)"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "${LP_REQUIREMENTS[@]}" "${EXTRA_REQUIREMENTS[@]}"

echo "[install_peer] checking the install"
"${PIP[@]}" check || echo "[install_peer] pip check complains (expected: nvidia-dali-cuda110 missing)"
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md

import lightning_pose  # noqa: F401  (import must work without DALI)
import torch

print(
    "[install_peer] ok: lightning-pose", md.version("lightning-pose"),
    "torch", torch.__version__, "lightning", md.version("lightning"),
    "cuda available", torch.cuda.is_available(),
)
EOF
echo "[install_peer] litpose entry point: $VENV/bin/litpose"
