"""``lpray smooth``: Ensemble Kalman Smoother over one video's ensemble member predictions.

Reads the members (3-row-header CSVs as lpray, Lightning Pose and DeepLabCut write them, or
lpray parquet), smooths them (single view, or multi-view with ``--views``), writes the smoothed
table as CSV (the reference EKS's columns) and a parquet copy beside it, both atomically, and prints
the smoothing parameter used per keypoint. A keypoint that no member ever predicted gets NaN
outputs and a warning on stderr rather than failing the run.
"""

from __future__ import annotations

import argparse
import sys
import warnings

NAME = "smooth"
HELP = "Smooth one video's ensemble predictions with the Ensemble Kalman Smoother (EKS)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "preds", nargs="+", metavar="PRED_FILES", help="ensemble member tables (paths or globs)"
    )
    parser.add_argument("--out", required=True, help="output CSV; a .parquet copy goes beside it")
    parser.add_argument(
        "--smooth-param",
        type=float,
        default=None,
        help="smoothing parameter s for every keypoint (smaller = smoother); default: fitted "
        "per keypoint by maximum likelihood",
    )
    parser.add_argument(
        "--views",
        default=None,
        help="comma-separated view suffixes for mirror-style data, e.g. top,bot: keypoints "
        "<part>_top and <part>_bot are smoothed jointly by the multi-view EKS",
    )
    parser.add_argument(
        "--fit-frames",
        default=None,
        help="frame windows for fitting s, e.g. 0:500,1000: (half-open; default all frames)",
    )


def parse_windows(text: str | None) -> list[tuple[int | None, int | None]] | None:
    """Parse ``"0:500,1000:"`` into ``[(0, 500), (1000, None)]``."""
    if not text:
        return None
    windows = []
    for part in text.split(","):
        start, sep, end = part.strip().partition(":")
        if not sep:
            raise ValueError(f"--fit-frames: {part!r} is not a start:end window")
        try:
            windows.append((int(start) if start else None, int(end) if end else None))
        except ValueError as err:
            raise ValueError(f"--fit-frames: {part!r} is not a start:end window") from err
    return windows


def parquet_path(out: str) -> str:
    """The parquet copy's path: the CSV's with its extension replaced."""
    return (out[: -len(".csv")] if out.lower().endswith(".csv") else out) + ".parquet"


def _read(path: str):
    from lpray.io.tables import read_pose_csv, read_pose_parquet

    return read_pose_parquet(path) if path.lower().endswith(".parquet") else read_pose_csv(path)


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: the CLI imports every command to build its parser
    from lpray.io.storage import expand
    from lpray.io.tables import write_pose_csv, write_pose_parquet
    from lpray.smooth.api import smooth_ensemble, smooth_ensemble_multiview, view_groups_by_suffix
    from lpray.smooth.members import majority_keypoints

    paths = expand(args.preds)
    tables = [_read(p) for p in paths]
    windows = parse_windows(args.fit_frames)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        if args.views:
            views = [v.strip() for v in args.views.split(",") if v.strip()]
            groups = view_groups_by_suffix(majority_keypoints(tables), views)
            table, params = smooth_ensemble_multiview(
                tables, groups, args.smooth_param, fit_frames=windows, sources=paths
            )
        else:
            table, params = smooth_ensemble(
                tables, args.smooth_param, fit_frames=windows, sources=paths
            )
    for warning in caught:
        print(f"lpray smooth: warning: {warning.message}", file=sys.stderr)
    write_pose_csv(table, args.out)
    write_pose_parquet(table, parquet_path(args.out))
    chosen = "given" if args.smooth_param is not None else "fitted"
    print(f"EKS on {len(paths)} members, {len(table)} frames -> {args.out}")
    print(f"smoothing parameter per keypoint ({chosen}):")
    for name, value in params.items():
        print(f"  {name}: {value:.6g}")
    return 0
