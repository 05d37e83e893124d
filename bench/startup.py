"""How long the ``lpray track`` driver takes to reach ``ray.init``, and whether it imported torch.

Runs ``lpray track ENSEMBLE VIDEO`` in fresh processes, once per code tree per repeat, the trees
interleaved (so a warmer page cache favours none), with ``lpray.raywork.ensure_ray`` wrapped to
record the time since the child's first statement (the interpreter's own start-up excluded). Compare the working tree with an older commit checked
out elsewhere (``git worktree add /tmp/old COMMIT``):

    python bench/startup.py --trees new=. old=/tmp/old
    python bench/startup.py --ensemble outputs/pipeline-synthetic/ensemble \\
        --video outputs/synthetic-demo/videos-test/test00.mp4      # the main job's (defaults)
    python bench/startup.py --smoke     # CPU: one run; without the main job's outputs, a tiny
                                        # random ensemble and synthetic video of its own
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, print_table, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENSEMBLE = ROOT / "outputs/pipeline-synthetic/ensemble"  # the main job's
VIDEO = ROOT / "outputs/synthetic-demo/videos-test/test00.mp4"

# run in the child: the time from its start to ray.init, then the track command itself
CHILD = """
import json, sys, time
start = time.perf_counter()
from lpray import cli
import lpray.raywork as raywork
real = raywork.ensure_ray
def timed(*args, **kwargs):
    print("STARTUP " + json.dumps({"ray_init_s": time.perf_counter() - start,
                                   "torch_imported": "torch" in sys.modules}), flush=True)
    return real(*args, **kwargs)
raywork.ensure_ray = timed
sys.exit(cli.main(["track", *sys.argv[1:], "--overlay", "none", "--no-progress",
                   "--cpus-per-task", "1"]))
"""


def run_once(tree: Path, ensemble: Path, video: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ensemble), str(video), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("STARTUP ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"lpray track failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(lines[0].split(" ", 1)[1])


def smoke_inputs(work: Path) -> tuple[Path, Path]:
    """Two random ResNet-18 members (bench/track.py's) and a 10-frame synthetic video (what
    ``lpray synthetic`` writes) in ``work``: the time to ``ray.init`` depends on neither's
    content, and CI has no main job's outputs."""
    from track import make_ensemble

    from lpray.data.synthetic import SyntheticSpec, make_synthetic_project

    spec = SyntheticSpec(
        n_train_videos=1, n_test_videos=1, frames_per_video=10, n_labeled=0, frame_size=(64, 64)
    )
    video = make_synthetic_project(work / "project", spec).test_videos[0]
    return make_ensemble(work, 2, "resnet18", 64), video


def inputs(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """The ensemble and video given, else the main job's; else a smoke run's own (in ``work``)."""
    ensemble, video = args.ensemble or ENSEMBLE, args.video or VIDEO
    missing = [path for path in (ensemble, video) if not path.exists()]
    if missing and args.smoke and args.ensemble is None and args.video is None:
        return smoke_inputs(work)
    if missing:
        sys.exit(f"{missing[0]}: not found; run the main job first (bash scripts/quickstart.sh)")
    return ensemble.resolve(), video.resolve()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trees", nargs="+", default=[f"new={ROOT}"], help="NAME=CODE_TREE")
    parser.add_argument("--ensemble", type=Path, help=f"default {ENSEMBLE.relative_to(ROOT)}")
    parser.add_argument("--video", type=Path, help=f"default {VIDEO.relative_to(ROOT)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--name", default="startup_cpu")
    parser.add_argument("--smoke", action="store_true", help="one run of each tree")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.name = 1, "startup_smoke"
    trees = {name: Path(path).resolve() for name, path in (t.split("=", 1) for t in args.trees)}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as work:
        ensemble, video = inputs(args, Path(work))
        for repeat in range(args.repeats):
            for name, tree in trees.items():
                out = Path(work) / f"{name}-{repeat}"
                runs[name].append(run_once(tree, ensemble, video, out))
    rows = [
        {
            "tree": name,
            "ray_init_s_median": median([r["ray_init_s"] for r in mine]),
            "torch_imported": all(r["torch_imported"] for r in mine),
            "repeats": len(mine),
        }
        for name, mine in runs.items()
    ]
    print_table(rows, ["tree", "ray_init_s_median", "torch_imported", "repeats"])
    write_json(
        args.name,
        {
            "trees": {k: str(v) for k, v in trees.items()},
            # a smoke run's own inputs are gone with its temporary folder
            "ensemble": str(ensemble),
            "video": str(video),
            "rows": rows,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
