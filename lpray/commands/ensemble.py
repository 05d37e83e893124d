"""``lpray ensemble CONFIG --seeds K [--out DIR] [overrides...]``: train a seed ensemble on Ray."""

from __future__ import annotations

import argparse
import sys

NAME = "ensemble"
HELP = "Train K models that differ in seed (and optionally labeled frames) as Ray tasks."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", nargs="?", help="YAML config (defaults: built-in synthetic dataset)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="section.key=value overrides, e.g. training.max_epochs=2"
    )
    parser.add_argument("--seeds", type=int, required=True, help="number of members K")
    parser.add_argument(
        "--out", default=None, help="ensemble folder (default: the config's training.output_dir)"
    )
    parser.add_argument("--cpus-per-member", type=float, default=1.0, help="CPUs per member")
    parser.add_argument(
        "--gpus-per-member",
        type=float,
        default=None,
        help="GPUs per member; fractions pack (default: 1 on a cluster with GPUs, else 0)",
    )
    parser.add_argument(
        "--workers-per-member",
        type=int,
        default=1,
        help="Ray Train workers per member (>1: cpus/gpus are per worker)",
    )
    parser.add_argument(
        "--vary-labels",
        action="store_true",
        help="also give member k data.split_seed + k (a different labeled subset)",
    )
    parser.add_argument(
        "--max-retries", type=int, default=2, help="retries of a member whose worker died"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace member folders holding models of other labels/config (each old member "
        "is kept until its new one is complete)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lpray.commands.train import split_config_and_overrides
    from lpray.config import load_config
    from lpray.ensemble.run import MemberResources, train_ensemble

    config, overrides = split_config_and_overrides(args)
    cfg = load_config(config, overrides)
    result = train_ensemble(
        cfg,
        args.seeds,
        args.out or cfg.training.output_dir,
        MemberResources(args.cpus_per_member, args.gpus_per_member, args.workers_per_member),
        vary_labels=args.vary_labels,
        max_retries=args.max_retries,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    counts = [f"{result.trained} trained now"]
    if result.failed:
        counts.append(f"{len(result.failed)} failed")
    if result.skipped:
        counts.append(f"{result.skipped} finished before")
    print(f"ensemble: {result.out_dir} ({', '.join(counts)}, {result.seconds:.0f} s)")
    for record in result.records:
        metrics = record.get("metrics") or {}
        errors = ", ".join(
            f"{key} {metrics[key]:.2f} px"
            for key in ("best_val_pixel_error", "test_pixel_error")
            if isinstance(metrics.get(key), float)
        )
        detail = record.get("error") or errors
        line = f"  {record['name']} (seed {record['seed']}): {record['status']}  {detail}"
        print(line, file=sys.stderr if record["status"] == "failed" else sys.stdout)
    return 1 if result.failed else 0
