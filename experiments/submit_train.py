"""``ray job submit`` entrypoint: train one model on the Ray cluster the job runs on.

Takes what ``lpray train`` takes (CONFIG, ``section.key=value`` overrides, ``--workers``,
``--gpus-per-worker``, ``--cpus-per-worker``, ``--storage``) but connects to the existing cluster
(``ray.init(address="auto")``: the job's RAY_ADDRESS) instead of starting a local one, and needs
``--workers`` >= 1. Run it from the repository root::

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env cluster/runtime_env.yaml -- \\
        python experiments/submit_train.py experiments/synthetic.yaml \\
        training.max_epochs=50 training.output_dir=/shared/models/synthetic \\
        --workers 4 --gpus-per-worker 1 --cpus-per-worker 8 --storage s3://YOUR-BUCKET/lpray-runs

Without a runtime_env file, pass it inline; the excludes keep the upload small (the job server
refuses packages over 512 MiB) and the env vars reach the job and its workers::

    --runtime-env-json '{"excludes": [".venv/", ".git/", "outputs/", ".carry/", "bench/"],
                         "env_vars": {"NCCL_NVLS_ENABLE": "0", "PYTHONUNBUFFERED": "1"}}'

Where things land: checkpoints, per-epoch metrics, the step log, metrics.csv and summary.json go
to ``--storage`` (use shared storage, s3:// or gs://, on a multi-node cluster: every worker
writes there); the model directory (``training.output_dir``) is written on the node that runs this
driver: give an absolute path, since a relative one lands in the job's temporary working-dir copy.
Submitting the same command again continues the run from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The job's working directory is the repository copy; make its lpray importable even where the
# cluster does not have lpray installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lpray.commands import train as train_command  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``lpray train``'s arguments plus ``--address``; ``--workers`` defaults to 1 here."""
    parser = argparse.ArgumentParser(prog="submit_train.py", description=__doc__.split("\n\n")[0])
    train_command.add_arguments(parser)
    parser.add_argument(
        "--address", default="auto", help="Ray cluster address (default: the job's cluster)"
    )
    parser.set_defaults(workers=1)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1: a job trains on Ray Train workers")
    return args


def main(argv: list[str] | None = None) -> int:
    from lpray.raywork import ensure_ray

    args = parse_args(argv)
    ensure_ray(args.address)
    return train_command.run(args)


if __name__ == "__main__":
    sys.exit(main())
