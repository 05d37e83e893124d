"""The Ray runtime helpers (lpray/raywork.py) that need a Ray of their own."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

CHILD = """
import logging, ray
from lpray.raywork import _PLACEMENT_GROUP_CLEANER, ensure_ray
ensure_ray()

@ray.remote
def level():
    return logging.getLogger(_PLACEMENT_GROUP_CLEANER).level

print("LEVELS", sorted(ray.get([level.remote() for _ in range(3)])))
"""


@pytest.mark.slow
def test_a_ray_started_here_quiets_the_placement_group_cleaner_in_its_workers(tmp_path):
    """Ray Train's cleaner warned every second of every Train run (34 of the main job's console
    lines) because lpray's local Ray has no dashboard for its state API queries."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"LEVELS {[logging.ERROR] * 3}" in done.stdout, done.stdout[-2000:]
