"""Do ``lpray select-frames`` picks teach the next model more than random or DLC-jump picks?

On the synthetic set (truth on every frame of every video):

1. train a seed ensemble on a few labels (``--base-labels`` frames of the training videos);
2. track the "pool" videos (unseen, unlabeled) with it: the tracking worker and EKS task bodies
   of ``lpray track`` (``TrackWorker.predict`` + ``smooth_video``), run in this process;
3. pick N pool frames three ways: ``select-frames`` (the ensemble's disagreement), uniformly at
   random (a new draw per seed), and DeepLabCut's ``jump`` outlier criterion on one network's
   predictions (frames where a keypoint moves more than ``--jump-epsilon`` px from the previous
   frame; DLC's ``uniform`` extraction, evenly spaced among a video's outliers; short lists are
   filled with the largest jumps so every method adds N frames);
4. give each pick its synthetic truth as labels, ``lpray merge-labels`` it into a copy of the
   project, and retrain from scratch with the same steps (one model per method and seed);
5. report each retrained model's pixel error on every frame of the pool videos and of held-out
   videos nobody picked from (visible keypoints), and the base models' (no added labels).

    python bench/select_frames.py                       # reduced CPU scale (the default)
    python bench/select_frames.py --n 20 --epochs 20 --frame-size 128 --name select_frames_big
    python bench/select_frames.py --smoke               # CPU, seconds: every step, tiny
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, work_folder, write_json  # noqa: E402

from lpray.config import load_config  # noqa: E402
from lpray.data.synthetic import SyntheticSpec, load_truth, make_synthetic_project  # noqa: E402
from lpray.inference.network import load_network  # noqa: E402
from lpray.inference.video import predict_video_arrays  # noqa: E402
from lpray.io.layout import ModelDir  # noqa: E402
from lpray.io.tables import arrays_to_table, read_pose_csv, table_to_arrays, write_pose_csv  # noqa: E402
from lpray.select import extraction, picking  # noqa: E402
from lpray.select.merge import merge_labels  # noqa: E402
from lpray.select.run import SelectSettings, select_frames  # noqa: E402
from lpray.track.manifest import VideoJob  # noqa: E402
from lpray.track.tasks import TrackSettings, TrackWorker, smooth_video  # noqa: E402
from lpray.train.fit import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("select-frames", "random", "dlc-jump")
BASE = "base ensemble member"  # the trackers themselves, no new labels, --epochs
NONE = "none"  # retrained on the base labels alone, --retrain-epochs
# --smoke: every method (none too) once, on the least data and steps that run them all; a
# 2-step network barely moves (jumps of hundredths of a px), so with jump epsilon 0 the DLC
# outliers are its moving frames and DLC's uniform extraction runs, not only the fill
SMOKE = {
    "n": 2,
    "base_labels": 4,
    "members": 2,
    "seeds": [0],
    "frames": 20,
    "pool_videos": 1,
    "eval_videos": 1,
    "frame_size": 64,
    "epochs": 1,
    "steps_per_epoch": 2,
    "batch_size": 4,
    "min_gap": 2,
    "methods": [*METHODS, NONE],
    "jump_epsilon": 0.0,
    "name": "select_frames_smoke",
}


def overrides(args: argparse.Namespace, root: Path, out: Path, seed: int, epochs: int) -> list[str]:
    """Supervised training (the comparison is about which labels, not the losses), every label
    in the train split, a fixed number of steps whatever the label count."""
    size = args.frame_size
    return [
        f"data.root={root}",
        f"data.image_size=[{size},{size}]",
        "data.train_prob=1.0",
        "data.val_prob=0.0",
        "losses.temporal.weight=0",
        f"training.max_epochs={epochs}",
        f"training.min_steps_per_epoch={args.steps_per_epoch}",
        f"training.batch_size={args.batch_size}",
        f"training.seed={seed}",
        f"training.output_dir={out}",
        "training.progress_bar=false",
        "training.accelerator=cpu",
        "training.last_checkpoint_every_s=1000000",
    ]


def fit(
    args: argparse.Namespace, root: Path, out: Path, seed: int, epochs: int
) -> tuple[Path, float]:
    started = time.perf_counter()
    values = overrides(args, root, out, seed, epochs)
    cfg = load_config(ROOT / "experiments" / "synthetic.yaml", values)
    return train(cfg), time.perf_counter() - started


def member_steps(model_dir: Path) -> int:
    """Training steps behind a model's best checkpoint (its epoch log)."""
    import pandas as pd

    epochs = pd.read_csv(ModelDir(model_dir).metrics)
    best = epochs.loc[epochs["val_pixel_error"].idxmin()]
    return int(best["step"])


def video_error(model_dir: Path, videos: list[Path], truths: dict[str, Path]) -> float:
    """Mean pixel error over every frame (visible keypoints) of ``videos``."""
    network = load_network(model_dir, "cpu")
    errors = []
    for video in videos:
        xy, _ = predict_video_arrays(network, str(video))
        truth, visible = load_truth(truths[video.stem])
        errors.append(np.linalg.norm(xy - truth, axis=-1)[visible])
    return float(np.concatenate(errors).mean())


def track(members: list[Path], videos: list[Path], out: Path) -> None:
    """What ``lpray track`` writes, by the bodies of its worker and EKS task."""
    names = [m.name for m in members]
    settings = TrackSettings(overlay="none", members=names)
    worker = TrackWorker([str(m) for m in members], settings, "cpu")
    for video in videos:
        job = VideoJob(video.stem, str(video), str(out))
        n_frames = len(load_truth_cached(video)[0])
        smooth_video(job, settings, worker.predict(job, 0, n_frames))


_TRUTH: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_TRUTH_PATHS: dict[str, Path] = {}


def load_truth_cached(video: Path) -> tuple[np.ndarray, np.ndarray]:
    if video.stem not in _TRUTH:
        _TRUTH[video.stem] = load_truth(_TRUTH_PATHS[video.stem])
    return _TRUTH[video.stem]


def random_picks(videos: list[Path], n: int, seed: int) -> dict[str, list[int]]:
    """``n`` frames uniformly at random over all pool frames, without replacement."""
    lengths = [len(load_truth_cached(v)[0]) for v in videos]
    flat = np.random.default_rng(1000 + seed).choice(sum(lengths), n, replace=False)
    picks: dict[str, list[int]] = {v.stem: [] for v in videos}
    edges = np.cumsum([0, *lengths])
    for index in flat:
        v = int(np.searchsorted(edges, index, side="right")) - 1
        picks[videos[v].stem].append(int(index - edges[v]))
    return picks


def jump_picks(
    tracks: Path, videos: list[Path], n: int, epsilon: float
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """DLC's ``jump`` outliers of one network (member 0), ``uniform`` extraction per video."""
    lengths = [len(load_truth_cached(v)[0]) for v in videos]
    quotas = picking.shares(lengths, n)
    picks, outliers = {}, {}
    for video, quota in zip(videos, quotas):
        xy, _ = table_to_arrays(read_pose_csv(tracks / video.stem / f"{video.stem}.rng=0.csv"))
        jump = np.zeros(len(xy))
        jump[1:] = np.nanmax(np.linalg.norm(np.diff(xy, axis=0), axis=-1), axis=1)
        found = np.flatnonzero(jump > epsilon)
        outliers[video.stem] = len(found)
        if len(found) >= quota:
            chosen = found[np.linspace(0, len(found) - 1, quota).round().astype(int)]
        else:
            rest = [t for t in np.argsort(-jump, kind="stable") if t not in set(found)]
            chosen = np.concatenate([found, rest[: quota - len(found)]])
        picks[video.stem] = sorted(int(t) for t in chosen)
    return picks, outliers


def labeling_folder(folder: Path, videos: list[Path], picks: dict[str, list[int]]) -> Path:
    """PNGs of the picks (their labels: :func:`truth_labels`)."""
    for video in videos:
        for t, frame in extraction.decode_frames(str(video), picks.get(video.stem, [])):
            extraction.write_png(frame, str(folder / extraction.image_name(video.stem, t)))
    return folder


def truth_labels(folder: Path, names: list[str], videos: list[Path]) -> None:
    """Replace a labeling folder's CSV (guesses or none) by the truth of its images."""
    by_stem = {v.stem: v for v in videos}
    images = sorted(str(p.relative_to(folder)) for p in folder.glob("labeled-data/*/*.png"))
    rows = []
    for image in images:
        stem, t = image.split("/")[1], int(image.rsplit("img", 1)[1][:8])
        truth, visible = load_truth_cached(by_stem[stem])
        rows.append(np.where(visible[t, :, None], truth[t], np.nan))
    table = arrays_to_table(np.stack(rows), names, index=images, scorer="truth")
    write_pose_csv(table, folder / "CollectedData.csv")


def project_copy(project: Path, target: Path) -> Path:
    """The labels and labeled images of the project (a plain project: no project.yaml)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(project / "labeled-data", target / "labeled-data")
    shutil.copy(project / "CollectedData.csv", target / "CollectedData.csv")
    return target


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10, help="frames each method adds")
    parser.add_argument("--base-labels", type=int, default=10)
    parser.add_argument("--members", type=int, default=3, help="ensemble members that track")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=300, help="frames per video")
    parser.add_argument("--pool-videos", type=int, default=2)
    parser.add_argument("--eval-videos", type=int, default=2)
    parser.add_argument("--frame-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--retrain-epochs", type=int, default=None, help="epochs of the retrained models"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=[*METHODS, NONE],
        help=f"ways to pick the added frames ({NONE}: add none, retrain on the base labels)",
    )
    parser.add_argument(
        "--reuse-base",
        action="store_true",
        help="track with the base members' best checkpoints as they are, even if cut short",
    )
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="evaluate the retrained models that finished, train none (a run cut short)",
    )
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--min-gap", type=int, default=15)
    parser.add_argument(
        "--pool-factor", type=int, default=3, help="select-frames' candidates per pick (k-means)"
    )
    parser.add_argument(
        "--jump-epsilon",
        type=float,
        default=2.0,
        help="DLC jump threshold in px (DLC's default 20 px at 640 px wide, scaled to the frame)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="work folder (default outputs/bench-select; --smoke: a temporary one)",
    )
    parser.add_argument("--name", default="select_frames_cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run, seconds")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    args.retrain_epochs = args.retrain_epochs or args.epochs
    return args


def main() -> None:
    args = parse_args()
    with work_folder(args.out, ROOT / "outputs" / "bench-select", args.smoke) as args.out:
        compare(args)


def compare(args: argparse.Namespace) -> None:
    """Steps 1-5 of the module docstring in ``args.out``; the result JSON as ``args.name``."""
    started = time.perf_counter()
    out = args.out
    spec = SyntheticSpec(
        seed=0,
        n_train_videos=2,
        n_test_videos=args.pool_videos + args.eval_videos,
        frames_per_video=args.frames,
        n_labeled=args.base_labels,
        frame_size=(args.frame_size, args.frame_size),
    )
    project = make_synthetic_project(out / "project", spec)
    _TRUTH_PATHS.update(project.truth_paths)
    pool = project.test_videos[: args.pool_videos]
    held_out = project.test_videos[args.pool_videos :]
    base_root = project_copy(project.root, out / "base-project")

    rows: list[dict] = []
    members = []
    for k in range(args.members):
        member = out / "base" / f"member-{k}"
        if args.reuse_base and ModelDir(member).best_checkpoint.is_file():
            members.append(member)  # a member cut short: its best checkpoint so far
            continue
        model, seconds = fit(args, base_root, member, k, args.epochs)
        members.append(model)
        print(f"base member {k}: {seconds:.0f} s", flush=True)
    base_steps = [member_steps(m) for m in members]
    tracks = out / "tracks"
    if not (tracks / pool[-1].stem / "done.json").exists():
        track(members, pool, tracks)

    picks_dir = out / "picks"
    shutil.rmtree(picks_dir, ignore_errors=True)
    chosen = select_frames(
        str(tracks),
        str(picks_dir / "select-frames"),
        SelectSettings(n=args.n, min_gap=args.min_gap, pool_factor=args.pool_factor, seed=0),
    )
    selected = {v.stem: [p.frame for p in chosen.picks if p.key == v.stem] for v in pool}
    jumps, outliers = jump_picks(tracks, pool, args.n, args.jump_epsilon)
    names = project.keypoint_names
    picked: dict[str, dict] = {"select-frames": selected, "dlc-jump": jumps}
    missing: list[str] = []
    for seed in args.seeds:
        base_error = {
            "pool": video_error(members[seed % len(members)], pool, project.truth_paths),
            "held_out": video_error(members[seed % len(members)], held_out, project.truth_paths),
        }
        rows.append({"method": BASE, "seed": seed, **base_error, "minutes": 0})
        for method in args.methods:
            if method == NONE:
                folder = None
            elif method == "select-frames":
                folder = picks_dir / "select-frames"
                frames = selected
            elif method == "random":
                frames = random_picks(pool, args.n, seed)
                picked.setdefault("random", {})[seed] = frames
                folder = labeling_folder(picks_dir / f"random-{seed}", pool, frames)
            else:
                frames = jumps
                folder = labeling_folder(picks_dir / "dlc-jump", pool, frames)
            root = project_copy(project.root, out / "projects" / f"{method}-{seed}")
            if folder is not None:
                truth_labels(folder, names, pool)
                merged = merge_labels(root, folder)
                assert len(merged.added) == args.n, (method, len(merged.added))
            model_dir = out / "models" / f"{method}-{seed}"
            if args.finished_only and not ModelDir(model_dir).summary.is_file():
                missing.append(f"{method}-{seed}")
                continue
            # a finished model of the same labels and config is reused (a rerun adds methods)
            model, seconds = fit(args, root, model_dir, seed, args.retrain_epochs)
            row = {
                "method": method,
                "seed": seed,
                "pool": video_error(model, pool, project.truth_paths),
                "held_out": video_error(model, held_out, project.truth_paths),
                "minutes": seconds / 60,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)

    summary = []
    for method in (BASE, *args.methods):
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        summary.append(
            {
                "method": method,
                "pool_error_px": float(np.mean([r["pool"] for r in mine])),
                "pool_sd": float(np.std([r["pool"] for r in mine])),
                "held_out_error_px": float(np.mean([r["held_out"] for r in mine])),
                "held_out_sd": float(np.std([r["held_out"] for r in mine])),
                "seeds": len(mine),
            }
        )
    by_seed = {(r["method"], r["seed"]): r for r in rows}
    wins = {
        f"{other} ({where})": sum(
            by_seed[("select-frames", s)][where] < by_seed[(other, s)][where]
            for s in args.seeds
            if ("select-frames", s) in by_seed and (other, s) in by_seed
        )
        for other in args.methods
        for where in ("pool", "held_out")
        if other != "select-frames" and "select-frames" in args.methods
    }
    print_table(
        summary,
        ["method", "pool_error_px", "pool_sd", "held_out_error_px", "held_out_sd", "seeds"],
    )
    print(f"seeds where select-frames has the lower error: {wins}")
    write_json(
        args.name,
        {
            "scale": (
                "reduced for a shared 2-core CPU: "
                f"{args.frame_size}x{args.frame_size} frames, {args.frames} frames per video, "
                f"{args.base_labels} base labels, N={args.n}, {args.members} tracking members, "
                f"trackers {base_steps} steps, retrained models "
                f"{args.retrain_epochs * args.steps_per_epoch} steps of batch {args.batch_size}, "
                "supervised loss only"
            ),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "tracker_steps": base_steps,  # steps behind each tracking member's checkpoint
            "pool_videos": [v.stem for v in pool],
            "held_out_videos": [v.stem for v in held_out],
            "picks": {
                "select-frames": selected,
                "dlc-jump": jumps,
                "dlc-jump_outliers_per_video": outliers,
                "random": {str(s): f for s, f in picked.get("random", {}).items()},
            },
            "rows": rows,
            "not_run": missing,  # --finished-only: retrained models that did not finish
            "summary": summary,
            "seeds_select_frames_lower": wins,
            "minutes": (time.perf_counter() - started) / 60,
        },
    )


if __name__ == "__main__":
    main()
