"""``lpray pipeline PIPELINE.yaml [overrides]``: sweep -> ensemble -> track + EKS -> HTML report.

Every stage writes ``<storage.path>/stages/<stage>.json`` when it finishes and is skipped on a
rerun; an interrupted stage resumes. Overrides: ``ensemble.seeds=2``, ``track.videos=[a.mp4]``,
``storage.path=DIR`` (or a URL: ``storage.path=s3://BUCKET/runs/NAME``), ``config=...``,
``sweep=...`` change the pipeline file;
``sweep.num_samples=2`` the sweep settings; anything else (``training.max_epochs=3``) the config.
See :mod:`lpray.pipeline`.
"""

from __future__ import annotations

import argparse

NAME = "pipeline"
HELP = "Run the whole job: sweep, ensemble of the best config, track a corpus + EKS, HTML report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", help="pipeline YAML (config, sweep, ensemble, track, storage)")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="ensemble./track./storage. keys of the pipeline, sweep.key=value of the sweep "
        "settings, section.key=value of the training config",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from lpray.pipeline import load_pipeline, run_pipeline, summary_lines

    spec = load_pipeline(args.pipeline, args.overrides)
    result = run_pipeline(spec, progress=not args.no_progress)
    print("\n".join(summary_lines(result)))
    return 0
