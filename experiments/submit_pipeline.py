"""``ray job submit`` entrypoint: the whole pipeline (``lpray pipeline``) on the job's cluster.

Takes what ``lpray pipeline`` takes (PIPELINE.yaml and overrides) plus ``--address``, and
connects to the existing cluster (``ray.init(address="auto")``: the job's RAY_ADDRESS) instead of
starting a local one. From the repository root::

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env cluster/runtime_env.yaml -- \\
        python experiments/submit_pipeline.py experiments/pipeline_synthetic.yaml \\
        storage.path=s3://YOUR-BUCKET/lpray/runs/pipeline-synthetic

Give ``storage.path`` as a bucket URL (``s3://``, ``gs://``, any fsspec URL; every node reads and
writes it with its own credentials) or an absolute path on a filesystem mounted on every node (a
relative one lands in the job's temporary working-dir copy on the head, which the other nodes
do not see). Submitting the same command again skips the stages that finished and resumes the
others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The job's working directory is the repository copy; make its lpray importable even where the
# cluster does not have lpray installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lpray  # noqa: E402
from lpray.commands import pipeline as pipeline_command  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="submit_pipeline.py", description=__doc__.split("\n\n")[0]
    )
    pipeline_command.add_arguments(parser)
    parser.add_argument(
        "--address", default="auto", help="Ray cluster address (default: the job's cluster)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # Imports torch before Ray connects (the other order fails to load oneMKL in a job).
    from lpray.raywork import ensure_ray

    args = parse_args(argv)
    print(f"lpray: {lpray.__file__}", flush=True)  # the job's copy (the uploaded working dir)
    ensure_ray(args.address)
    args.no_progress = True  # job logs: no progress bars
    try:
        return pipeline_command.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"submit_pipeline.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
