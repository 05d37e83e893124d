"""The Ray runtime helpers train, tune, ensemble and track share: connecting, workers, tasks.

One module below all of them (of lpray it imports only the option names), so that a Ray Train
run, a sweep, an ensemble and a tracked corpus connect the same way (:func:`ensure_ray`), give their
workers the same environment (:func:`worker_env`) and size their tasks the same way
(:func:`task_options`, :func:`gpus_or_default`, :func:`limit_torch_threads`).

Ensemble training and corpus tracking both launch one task (or task chain) per item and must
keep going when an item fails: each result is handed over as soon as it is ready (so its record
is written at once, not after the slowest item), a failure becomes a short message instead of an
exception, and a progress bar counts finished items.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Iterator
from typing import Any

import ray
from tqdm.auto import tqdm

from lpray.options import WORKER_LOG_LEVEL

# Environment every worker gets unless the driver's environment says otherwise: NVLink multicast
# off (lpray's all-reduces do not need it, and on shared hosts it can wedge the GPUs).
WORKER_ENV_DEFAULTS = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
# (WORKER_LOG_LEVEL, the level of the progress messages workers print, travels the same way)
WORKER_ENV_PASSTHROUGH = (
    *WORKER_ENV_DEFAULTS,
    "NCCL_CUMEM_ENABLE",
    "RAY_AUTH_MODE",
    WORKER_LOG_LEVEL,
)


def task_exception(err: BaseException) -> BaseException:
    """The exception raised inside a task (also when raised by a task this one depended on).

    ``RayTaskError`` wraps it as ``cause``; worker or node deaths have no cause and are returned
    as they are.
    """
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def describe_error(err: BaseException) -> str:
    """A one-line message for a failed task: the user's exception, not Ray's traceback."""
    err = task_exception(err)
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def as_completed(
    refs: dict[ray.ObjectRef, Hashable], progress: bool = True, desc: str = "tasks"
) -> Iterator[tuple[Hashable, Any, BaseException | None]]:
    """Yield ``(key, result, None)`` or ``(key, None, exception)`` for each ref as it finishes.

    Args:
        refs: object ref -> the caller's key for it (a video, a member).
        progress: show a tqdm bar over completions.
        desc: the bar's label.
    """
    pending = list(refs)
    with tqdm(total=len(pending), desc=desc, disable=not progress, unit=desc) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    yield refs[ref], ray.get(ref), None
                except Exception as err:  # noqa: BLE001 - one bad item must not stop the rest
                    yield refs[ref], None, task_exception(err)
                bar.update(1)


def ensure_ray(address: str | None = None) -> None:
    """Connect to a running cluster (``address``, RAY_ADDRESS, ``ray job submit``) or start one."""
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        local = address is None and not os.environ.get("RAY_ADDRESS")
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=True,
            # only the Ray started here: a running cluster and its jobs have their own settings
            runtime_env={"worker_process_setup_hook": f"{__name__}.setup_local_worker"}
            if local
            else None,
        )


# Ray Train's PlacementGroupCleaner asks the state API every second whether its controller
# lives, to free the placement group of a controller that died on a long-lived cluster. The
# state API needs the dashboard, which lpray's local Ray does not start (it costs start-up), so
# every Train run's cleaner warned each second (34 of the main job's console lines) and could
# not act anyway. Nothing is lost by quieting it there: that Ray ends with this driver, placement
# groups included, and a sweep frees its finished trials' groups itself (lpray.tune.cleanup).
_PLACEMENT_GROUP_CLEANER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def setup_local_worker() -> None:
    """Every worker process of a Ray that :func:`ensure_ray` started runs this first."""
    import logging

    logging.getLogger(_PLACEMENT_GROUP_CLEANER).setLevel(logging.ERROR)


def limit_torch_threads() -> None:
    """Inside a Ray task, give torch as many threads as the task has whole CPUs (at least one).

    Ray sets ``OMP_NUM_THREADS`` the same way, but only before torch is first imported in a
    worker process; a reused worker keeps its old thread count unless told. Outside a task
    (the functions also run in plain processes) nothing changes.
    """
    if not in_worker():
        return
    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    import torch

    torch.set_num_threads(max(1, math.floor(assigned)))


def worker_log_level() -> str:
    """The level (a ``logging`` name) for library chatter in workers: ``LPRAY_WORKER_LOG_LEVEL``,
    else WARNING."""
    return os.environ.get(WORKER_LOG_LEVEL, "WARNING").upper()


def in_worker() -> bool:
    """Whether this runs inside a Ray task or actor (not the driver, not a plain process)."""
    if not ray.is_initialized():
        return False
    try:
        ray.get_runtime_context().get_assigned_resources()
    except AssertionError:  # the driver
        return False
    return True


def node_id() -> str:
    """The Ray node this runs on (recorded in outputs so users see where work went)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def gpus_or_default(requested: float | None, share: float) -> float:
    """``requested`` GPUs per task, or by default ``share`` of a GPU when the cluster has any.

    Called after connecting: the default follows the cluster, so the same command uses GPUs on
    a GPU cluster and runs on CPUs on a laptop.
    """
    if requested is not None:
        return requested
    return share if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def task_options(cpus: float, gpus: float, max_retries: int, **extra: Any) -> dict[str, Any]:
    """``.options(...)`` for a task: resources, and retries on worker or node death only.

    Exceptions raised by lpray code are not retried (``retry_exceptions=False``): a corrupt video
    or a bad config fails the same way every time; a dead worker or a lost node is retried.
    """
    if cpus < 0 or gpus < 0:
        raise ValueError(f"resources must be >= 0, got cpus={cpus}, gpus={gpus}")
    return {
        "num_cpus": cpus,
        "num_gpus": gpus,
        "max_retries": max_retries,
        "retry_exceptions": False,
        **extra,
    }


def worker_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables every worker gets: the safe defaults, overridden by the driver's."""
    environ = dict(os.environ if environ is None else environ)
    env = dict(WORKER_ENV_DEFAULTS)
    env.update({key: environ[key] for key in WORKER_ENV_PASSTHROUGH if key in environ})
    return env
