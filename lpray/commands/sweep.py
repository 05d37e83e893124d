"""``lpray sweep CONFIG SWEEP.yaml [section.key=value ...] [--resume DIR]``: a Ray Tune sweep.

Each trial trains the config with the trial's values on Ray Train; results, plots and the best
config per label count land in ``<sweep.storage_path>/<sweep.name>/report``. Overrides starting
with ``sweep.`` change the sweep file's settings (``sweep.num_samples=2``), the others the config
(``training.max_epochs=5``). ``--resume DIR`` continues an interrupted sweep from its directory
alone (CONFIG and SWEEP.yaml are then not needed: the sweep stored its own copies).
"""

from __future__ import annotations

import argparse

NAME = "sweep"
HELP = "Sweep loss weights, label counts, ... with Ray Tune (each trial a Ray Train run)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config the trials start from")
    parser.add_argument("sweep", nargs="?", help="sweep file: search spaces and sweep settings")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="section.key=value overrides of the config; sweep.key=value of the sweep settings",
    )
    parser.add_argument(
        "--resume", metavar="DIR", default=None, help="continue the sweep in this directory"
    )


def run(args: argparse.Namespace) -> int:
    from lpray.config import load_config
    from lpray.tune.space import load_sweep
    from lpray.tune.sweep import resume_sweep, run_sweep

    if args.resume is not None:
        if args.config or args.sweep or args.overrides:
            raise ValueError("--resume DIR takes no CONFIG, SWEEP.yaml or overrides")
        experiment_dir = resume_sweep(args.resume)
    else:
        if args.config is None or args.sweep is None:
            raise ValueError("give CONFIG and SWEEP.yaml (or --resume DIR)")
        sweep_overrides = [o for o in args.overrides if o.startswith("sweep.")]
        config_overrides = [o for o in args.overrides if not o.startswith("sweep.")]
        spec = load_sweep(args.sweep, sweep_overrides)
        cfg = load_config(args.config, config_overrides)
        experiment_dir = run_sweep(cfg, spec)
    print_summary(experiment_dir)
    return 0


def print_summary(experiment_dir: str) -> None:
    """The lines a user reads after a sweep: where it is, how it ended, the best per label."""
    import json

    from lpray.io.storage import filesystem, join

    fs, inner = filesystem(join(experiment_dir, "report", "summary.json"))
    with fs.open(inner, "r") as handle:
        summary = json.load(handle)
    print(f"sweep directory: {experiment_dir}")
    print(
        f"  trials: {summary['trials']} {summary['status']}, trial-epochs {summary['trial_epochs']}"
    )
    for best in summary["best"]:
        metric = next(k for k in best if k.startswith("best_"))
        print(
            f"  train_frames={best['label']} ({best['n_train_frames']} frames): "
            f"{metric} {best[metric]:.3f} (trial {best['trial_id']}) -> {best['path']}"
        )
