"""``lpray sweep-report DIR [--out OUT]``: rebuild a sweep's tables, plots and best configs.

Reads only the experiment directory (Tune's trial list and lpray's epoch logs), so it works while
the sweep runs, after it was interrupted, or on another machine that can read the storage.
"""

from __future__ import annotations

import argparse

NAME = "sweep-report"
HELP = "Rebuild a sweep's results table, plots and best configs from its directory."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment_dir", metavar="DIR", help="the sweep's directory")
    parser.add_argument("--out", default=None, help="report folder (default: DIR/report)")


def run(args: argparse.Namespace) -> int:
    from lpray.tune.results import write_report

    out = write_report(args.experiment_dir, args.out)
    print(f"report: {out}")
    return 0
