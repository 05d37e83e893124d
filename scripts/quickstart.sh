#!/usr/bin/env bash
# The README's first command: set everything up, then run the main job on the built-in synthetic
# dataset with an embedded local Ray (sweep -> ensemble -> track -> EKS -> report).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
.venv/bin/lpray pipeline experiments/pipeline_synthetic.yaml "$@"
