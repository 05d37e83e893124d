"""The benches' CPU smoke modes run (a bench that no longer runs is caught in CI, not on the GPU
machine, where device time is short)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_graphs_bench_smoke(tmp_path):
    env = {**os.environ, "LPRAY_BENCH_RESULTS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "graphs.py"), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "graphs_smoke.json").read_text())
    rows = result["rows"]
    # one row per (members, busy threads, mode); on a CPU only the eager mode runs
    assert [(r["K"], r["threads"], r["mode"]) for r in rows] == [(1, 0, "eager"), (1, 2, "eager")]
    assert all(math.isfinite(r["video_fps"]) and r["video_fps"] > 0 for r in rows)
    assert "machine" in result
