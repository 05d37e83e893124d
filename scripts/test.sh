#!/usr/bin/env bash
# The tests in two tiers: the fast one first (no training, no Ray; minutes), so a plain bug
# shows before the slow tier (training runs and Ray clusters) spends its time. Both tiers
# always run; the script exits non-zero if either failed. Extra arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
PYTHON=${PYTHON:-.venv/bin/python}

tier() {  # tier NAME MARKER-EXPRESSION [pytest args...]
  local name=$1 marker=$2 rc
  shift 2
  echo "== $name tier: pytest -m '$marker'"
  "$PYTHON" -m pytest -q -m "$marker" "$@"
  rc=$?
  # pytest exits 5 when the tier selects no tests (e.g. a -k that matches only the other tier):
  # nothing failed there.
  if [ "$rc" -eq 5 ]; then
    echo "== $name tier: no tests selected"
    rc=0
  fi
  return "$rc"
}

tier fast "not slow" "$@"
fast=$?
tier slow "slow" "$@"
slow=$?
echo "== fast tier exit $fast, slow tier exit $slow"
[ "$fast" -eq 0 ] && [ "$slow" -eq 0 ]
