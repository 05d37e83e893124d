"""Training a seed ensemble as Ray work: ``lpray ensemble CONFIG --seeds K``.

Each member is one Ray task that calls :func:`lpray.train.fit.train` (one process, CPU or one
GPU) or, with ``workers > 1``, a small driver task that runs a Ray Train job for the member.
Members are independent, so Ray packs as many side by side as the resources per member allow.

Layout::

    OUT/ensemble.json      manifest: members, seeds, status, metrics, config
    OUT/member-<k>/        one model directory per member (see lpray.train.fit)

Nothing is lost: a member whose ``summary.json`` exists (for the same config) is skipped on a
rerun; an unfinished one resumes from its ``last.ckpt``; a failed member is recorded with its
error while the others finish; a worker that dies is retried by Ray.

``OUT`` may be a URL (``s3://``, ``gs://``, ...): each member then trains in a staging folder on
its node and is uploaded when complete, ``summary.json`` last (:mod:`lpray.ensemble.stored`), so
members are written by workers on any node and the driver's disk holds none of them.

What the members share is checked once, in the driver, before any member is launched or any
file is written: the config, the labels and every labeled image, the videos, and each member's
existing model directory (a member folder holding a model of other labels or another data/model
config stops the run, naming it, unless ``overwrite``). So a bad labels file is one error, not K
failed members.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray

from lpray.config import Config, config_from_dict
from lpray.ensemble.manifest import is_finished, member_metrics, member_record, write_manifest
from lpray.ensemble.members import (
    MemberSpec,
    absolute_paths,
    ensemble_root,
    member_config,
    member_dir,
    plan_members,
)
from lpray.raywork import (
    as_completed,
    describe_error,
    gpus_or_default,
    limit_torch_threads,
    node_id,
    task_options,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemberResources:
    """Resources of one member.

    Attributes:
        cpus: CPUs of the member's task (per Ray Train worker when ``workers > 1``).
        gpus: GPUs likewise; fractions pack several small members onto one GPU. None: one GPU
            per member (per worker) when the cluster has GPUs, else none.
        workers: Ray Train workers per member; 1 trains in the task itself.
    """

    cpus: float = 1.0
    gpus: float | None = None
    workers: int = 1


@dataclass
class EnsembleResult:
    """What a call to :func:`train_ensemble` did."""

    out_dir: Path | str  # a URL when the ensemble is on an object store
    manifest: Path | str
    records: list[dict[str, Any]]
    launched: int  # member tasks started by this call (0 when everything was already done)
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)

    @property
    def trained(self) -> int:
        """Members this call trained to the end (launched and not failed)."""
        return self.launched - len(self.failed)

    @property
    def skipped(self) -> int:
        """Members finished before this call."""
        return len(self.records) - self.launched

    @property
    def member_dirs(self) -> list[Path | str]:
        return [
            member_dir(self.out_dir, r["model_dir"]) for r in self.records if r["status"] == "done"
        ]


@contextlib.contextmanager
def _member_folder(
    config_values: dict[str, Any], overwrite: bool
) -> Iterator[tuple[Config, bool, Path | None]]:
    """The config a member trains with here, the overwrite flag for it, and its staging folder.

    A member at a URL trains in a staging folder of this node (fresh when ``overwrite``) and is
    uploaded when training returns, ``summary.json`` last; a local member trains in place.
    """
    from lpray.ensemble.stored import clear_staging, prepare_staging, publish
    from lpray.io.storage import is_local

    url = config_values["training"]["output_dir"]
    if is_local(url):
        yield config_from_dict(config_values), overwrite, None
        return
    local = prepare_staging(url, overwrite)
    values = {**config_values, "training": {**config_values["training"], "output_dir": str(local)}}
    yield config_from_dict(values), False, local
    publish(local, url)
    clear_staging(local)


def _train_member(config_values: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    """Ray task body: train one member in this worker process."""
    from lpray.train.fit import train

    limit_torch_threads()
    started = time.perf_counter()
    with _member_folder(config_values, overwrite) as (cfg, replace_model, _):
        train(cfg, overwrite=replace_model)
    return {"seconds": time.perf_counter() - started, "node_id": node_id()}


def _train_member_distributed(
    config_values: dict[str, Any], resources: MemberResources, overwrite: bool = False
) -> dict[str, Any]:
    """Ray task body: drive a Ray Train run of ``resources.workers`` workers for one member.

    A member at a URL keeps its Ray Train run beside it (``OUT/ray/member-<k>``), so workers on
    any node write its checkpoints and a worker that dies resumes from the stored one.
    """
    from lpray.ensemble.stored import drop_orphan_run
    from lpray.io.storage import join
    from lpray.train.distributed import train_distributed

    started = time.perf_counter()
    url = config_values["training"]["output_dir"]
    with _member_folder(config_values, overwrite) as (cfg, replace_model, local):
        storage = None
        if local is not None:
            storage = join(url.rstrip("/").rsplit("/", 1)[0], "ray")
            drop_orphan_run(local, join(storage, local.name))
        train_distributed(
            cfg,
            num_workers=resources.workers,
            gpus_per_worker=resources.gpus,
            cpus_per_worker=resources.cpus,
            storage_path=storage,
            overwrite=replace_model,
        )
    return {"seconds": time.perf_counter() - started, "node_id": node_id()}


def _launch(
    cfg: Config, resources: MemberResources, max_retries: int, overwrite: bool = False
) -> ray.ObjectRef:
    if resources.workers > 1:
        # The member's task only drives Ray Train: a sliver of CPU, the workers hold the rest.
        task = ray.remote(_train_member_distributed).options(**task_options(0.01, 0.0, max_retries))
        return task.remote(cfg.to_dict(), resources, overwrite)
    task = ray.remote(_train_member).options(
        **task_options(resources.cpus, resources.gpus, max_retries)
    )
    return task.remote(cfg.to_dict(), overwrite)


def check_shared_inputs(
    base: Config, todo: list[MemberSpec], configs: dict[int, Config], overwrite: bool
) -> None:
    """Check, once and before any member starts, what every member would find wrong.

    The labels, every labeled image, the videos and the PCA fits are checked on the base config
    (this also builds the synthetic project once, rather than in K racing workers); each member's
    labels split and existing model directory on its own config.

    Raises:
        UserError: naming the file or key (or the member folder) of the first problem.
    """
    from lpray.data.labeled import split_frames
    from lpray.ensemble.stored import records_view
    from lpray.train.data import validate_inputs
    from lpray.train.model_dir import ModelDirError, check_model_dir, fingerprint

    bundle = validate_inputs(base)
    for member in todo:
        cfg = configs[member.index]
        d = cfg.data
        split = split_frames(
            bundle.frames, d.train_prob, d.val_prob, d.split_seed, d.train_frames, d.split_file
        )
        if overwrite:
            continue
        record = fingerprint(cfg, replace(bundle, split=split))
        if isinstance(member.model_dir, Path):
            check_model_dir(member.model_dir, cfg, record)
            continue
        with records_view(member.model_dir) as view:
            try:
                check_model_dir(view, cfg, record)
            except ModelDirError as err:  # name the stored folder, not the local stand-in
                raise ModelDirError(str(err).replace(str(view), member.model_dir)) from None


def train_ensemble(
    cfg: Config,
    n_members: int,
    out_dir: str | Path,
    resources: MemberResources | None = None,
    vary_labels: bool = False,
    max_retries: int = 2,
    progress: bool = True,
    overwrite: bool = False,
) -> EnsembleResult:
    """Train (or finish training) a K-member seed ensemble of ``cfg`` on Ray.

    Args:
        cfg: the base config; member k uses ``training.seed + k`` (see
            :func:`lpray.ensemble.members.plan_members`).
        n_members: K.
        out_dir: the ensemble folder: local; on several nodes, a shared filesystem (NFS) or a
            URL (``s3://``, ``gs://``: members are uploaded from the nodes that train them).
        resources: per member; default one CPU.
        vary_labels: also vary ``data.split_seed`` per member.
        max_retries: Ray retries of a member whose worker or node died.
        progress: show a progress bar over finished members.
        overwrite: replace member folders that hold models of other inputs (each member's new
            model is swapped in when complete); without it such a folder stops the run before
            anything starts.

    Returns:
        An :class:`EnsembleResult`; failed members are listed in it and in the manifest rather
        than raised, so the caller decides whether K-1 members are good enough.

    Raises:
        UserError: a problem every member would meet (labels, images, videos, config) or a
            member folder of other inputs, found before any member is launched or anything is
            written.
    """
    from lpray.raywork import ensure_ray

    resources = resources or MemberResources()
    started = time.perf_counter()
    root = ensemble_root(out_dir)
    base = absolute_paths(cfg)
    members = plan_members(base, n_members, root, vary_labels)
    configs = {m.index: member_config(base, m) for m in members}
    records: list[dict[str, Any]] = []
    todo: list[MemberSpec] = []
    for member in members:
        if is_finished(member, configs[member.index]):
            records.append(
                member_record(
                    member, "done", metrics=member_metrics(member.model_dir), resumed=True
                )
            )
        else:
            records.append(member_record(member, "pending"))
            todo.append(member)
    if todo:
        check_shared_inputs(base, todo, configs, overwrite)
    if isinstance(root, Path):
        root.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(root, base, records, vary_labels)
    failed: list[str] = []
    if todo:
        ensure_ray()
        resources = replace(resources, gpus=gpus_or_default(resources.gpus, 1.0))
        log.info("training %d member(s) (%d finished before)", len(todo), len(members) - len(todo))
        refs = {_launch(configs[m.index], resources, max_retries, overwrite): m for m in todo}
        for member, result, error in as_completed(refs, progress, desc="members"):
            if error is None:
                record = member_record(
                    member, "done", metrics=member_metrics(member.model_dir), **result
                )
            else:
                record = member_record(member, "failed", error=describe_error(error))
                failed.append(member.name)
            records[member.index] = record
            write_manifest(root, base, records, vary_labels)
    return EnsembleResult(root, manifest, records, len(todo), time.perf_counter() - started, failed)
