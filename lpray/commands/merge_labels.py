"""``lpray merge-labels PROJECT NEW_LABELS``: add corrected frames to a project's labels."""

from __future__ import annotations

import argparse

NAME = "merge-labels"
HELP = (
    "Add the corrected frames of a labeling folder (lpray select-frames) to a project's "
    "CollectedData.csv and images, without duplicates; refuses missing images and unknown keypoints."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "project", metavar="PROJECT", help="project folder (or its CollectedData.csv), local or URL"
    )
    parser.add_argument(
        "new_labels",
        metavar="NEW_LABELS",
        help="labeling folder (or its CollectedData.csv), local or URL",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="rows the project already labels take the new labels (default: the project's stay)",
    )
    parser.add_argument(
        "--accept-guesses",
        action="store_true",
        help="merge rows still marked as the ensemble's guess (scorer lpray-eks-guess)",
    )


def run(args: argparse.Namespace) -> int:
    from lpray.select.merge import merge_labels

    result = merge_labels(args.project, args.new_labels, args.replace, args.accept_guesses)
    print(
        f"{result.csv}: {len(result.added)} frames added, {len(result.replaced)} replaced, "
        f"{len(result.unchanged)} already there, {len(result.duplicates)} already labeled "
        "differently (kept the project's; --replace takes the new ones), "
        f"{len(result.context)} context frames copied"
        + (
            f"; {len(result.guesses)} left out, still the ensemble's guess (--accept-guesses "
            "merges them)"
            if result.guesses
            else ""
        )
    )
    return 0
