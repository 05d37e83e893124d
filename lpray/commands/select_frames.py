"""``lpray select-frames TRACK_DIR --n N --out DIR``: the frames to label next.

Ranks every frame of a tracked corpus by the ensemble's disagreement (see
:mod:`lpray.select.scoring`), spreads the picks over videos, time and appearance, and writes a
labeling folder: PNGs (and, with ``--context-frames``, their neighbours), a ``CollectedData.csv``
prefilled with the EKS guess (also as DeepLabCut's per-video ``CollectedData_<scorer>.h5``),
``selection.csv`` and ``selection.html`` (the picks with the members' predictions, and why).
"""

from __future__ import annotations

import argparse

NAME = "select-frames"
HELP = (
    "Pick the frames of a tracked corpus to label next (ensemble disagreement, EKS variance, "
    "jumps, PCA error, low confidence), as a labeling folder with the EKS guess prefilled."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("track_dir", metavar="TRACK_DIR", help="the --out folder of lpray track")
    parser.add_argument("--n", type=int, required=True, help="frames to pick over the corpus")
    parser.add_argument("--out", required=True, help="labeling folder to write (local or URL)")
    parser.add_argument(
        "--min-gap",
        type=int,
        default=15,
        help="picks of one video are at least this many frames apart",
    )
    parser.add_argument(
        "--pool-factor",
        type=int,
        default=3,
        help="candidates per pick among which k-means on downsampled frames keeps diverse ones",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="signal weights, e.g. ensemble_std=2,low_confidence=0 (signals: ensemble_std, "
        "posterior_std, temporal_norm, pca_error, low_confidence; default 1 each)",
    )
    parser.add_argument("--seed", type=int, default=0, help="k-means seed")
    parser.add_argument(
        "--ensemble",
        default=None,
        help="ensemble whose pose PCA scores pca_error for videos without a metrics file "
        "(default: the one TRACK_DIR/manifest.json names)",
    )
    parser.add_argument(
        "--context-frames",
        type=int,
        default=0,
        metavar="N",
        help="also extract frames t-N..t+N around each pick (not labeled rows) for context models; "
        "Lightning Pose's use 2 (default 0)",
    )
    parser.add_argument(
        "--dlc-scorer",
        default=None,
        help="scorer name of the per-video DeepLabCut stubs labeled-data/<video>/"
        "CollectedData_<scorer>.h5: your DeepLabCut config's scorer (default lpray-eks-guess)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing labeling folder at --out"
    )


def run(args: argparse.Namespace) -> int:
    from lpray.select.extraction import GUESS_SCORER
    from lpray.select.run import SelectSettings, select_frames
    from lpray.select.scoring import ScoreWeights

    settings = SelectSettings(
        n=args.n,
        min_gap=args.min_gap,
        pool_factor=args.pool_factor,
        weights=ScoreWeights.parse(args.weights),
        seed=args.seed,
        ensemble=args.ensemble,
        overwrite=args.overwrite,
        context_frames=args.context_frames,
        dlc_scorer=args.dlc_scorer or GUESS_SCORER,
    )
    result = select_frames(args.track_dir, args.out, settings)
    spread = ", ".join(f"{k}: {v}" for k, v in result.videos.items() if v)
    print(f"{len(result.picks)} frames picked from {len(result.videos)} videos ({spread})")
    print(
        f"labeling folder: {result.out} (CollectedData.csv holds the EKS guess; page: selection.html)"
    )
    return 0
