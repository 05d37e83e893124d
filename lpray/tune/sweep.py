"""Build, run and resume a sweep: a Ray Tune experiment whose trials are Ray Train runs.

How the search is put together:

- ``search: optuna`` (default): the grid parameters (e.g. ``data.train_frames``) are crossed with
  the searched ones by :class:`~lpray.tune.searcher.GridCrossSearcher`, one Optuna TPE per grid
  cell, ``num_samples`` trials per cell, all in one experiment.
- ``search: random``: Tune's own variant generator: ``grid_search`` over the grid parameters,
  ``num_samples`` random draws of the others per grid cell.
- ``search: grid``: every parameter a ``grid_search`` (ranges become ``grid_points`` points).
- ``scheduler: asha`` stops the worst trials early at epochs grace * rf^k; ``fifo`` never does.

Resume: the experiment directory holds Tune's state plus this package's own record
(:mod:`lpray.tune.store`); :func:`resume_sweep` restores the Tuner from it. Finished trials are
kept as they are; unfinished and errored ones continue from their Ray Train run's latest epoch
checkpoint (``resume_errored``; "restart" would be a lie here, since the Train run restores by name).
"""

from __future__ import annotations

import logging
from typing import Any

from lpray.config import Config
from lpray.io.storage import exists, is_local, join, local_path
from lpray.tune.space import Param, SweepError, SweepSpec, sweep_from_dict, validate_sweep
from lpray.tune.store import SweepMeta, read_meta, write_meta
from lpray.tune.trial import TIME_ATTR, TrialSetup, run_trial

log = logging.getLogger(__name__)


def storage_root(spec: SweepSpec) -> str:
    """``sweep.storage_path``; a local one made absolute (Ray needs that)."""
    storage = spec.settings.storage_path
    if is_local(storage):
        return str(local_path(storage).expanduser().resolve())
    return storage


def experiment_path(spec: SweepSpec) -> str:
    """The sweep's experiment directory: ``storage_path/name``."""
    return join(storage_root(spec), spec.settings.name)


def run_sweep(cfg: Config, spec: SweepSpec) -> str:
    """Validate, run every trial, write the report; returns the experiment directory.

    Raises:
        SweepError: a bad search space or an experiment directory already in use, before any
            trial starts (and before Ray starts).
        UserError: a bad labels file, image or video (every trial would fail on it), before
            anything is written.
    """
    label_counts = validate_sweep(cfg, spec)
    experiment_dir = experiment_path(spec)
    if exists(join(experiment_dir, "tuner.pkl")):  # (a sweep file alone: killed before Tune ran)
        raise SweepError(
            f"sweep.name: {experiment_dir} already holds a sweep; continue it with "
            f"`lpray sweep --resume {experiment_dir}` or choose another sweep.name"
        )
    _prepare_data_once(cfg)
    write_meta(experiment_dir, SweepMeta(cfg.to_dict(), spec.to_dict(), label_counts))
    return _fit(experiment_dir, restore=False)


def resume_sweep(experiment_dir: str) -> str:
    """Continue a sweep that was interrupted (killed driver, lost node); returns its directory.

    Trials that finished stay finished and are not run again; the others continue from their
    latest epoch checkpoint. A sweep that had already finished just gets its report rewritten.
    """
    if is_local(experiment_dir):
        experiment_dir = str(local_path(experiment_dir).expanduser().resolve())
    meta = read_meta(experiment_dir)
    if not exists(join(experiment_dir, "tuner.pkl")):
        raise FileNotFoundError(
            f"{experiment_dir}: no Tune state to resume (the sweep stopped before its first "
            "trial); start it again without --resume"
        )
    from lpray.config import config_from_dict

    _prepare_data_once(config_from_dict(meta.config))
    return _fit(experiment_dir, restore=True)


def _prepare_data_once(cfg: Config) -> None:
    """Check the inputs every trial shares once (labels, every labeled image, videos), before
    any trial starts or anything is written; builds the synthetic project (if any) here, before
    trials race to build it."""
    from lpray.train.data import validate_inputs

    validate_inputs(cfg)


def _fit(experiment_dir: str, restore: bool) -> str:
    from lpray.raywork import ensure_ray
    from lpray.tune.results import write_report

    ensure_ray()
    meta = read_meta(experiment_dir)
    spec = sweep_from_dict(meta.sweep)
    _warn_if_oversubscribed(spec)
    tuner = build_tuner(experiment_dir, meta, restore)
    tuner.fit()
    write_report(experiment_dir)
    return experiment_dir


def build_tuner(experiment_dir: str, meta: SweepMeta, restore: bool = False) -> Any:
    """The ``Tuner`` of a sweep, new or restored from ``experiment_dir``."""
    from ray import tune

    from lpray.train.distributed import storage_and_filesystem
    from lpray.tune.cleanup import ReleaseFinishedTrials

    spec = sweep_from_dict(meta.sweep)
    s = spec.settings
    setup = TrialSetup(meta.config, experiment_dir, s.resources, s.max_failures)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, setup=setup), {"cpu": s.resources.trial_cpus}
    )
    if restore:
        path, filesystem = storage_and_filesystem(experiment_dir)
        return tune.Tuner.restore(
            path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=filesystem,
        )
    storage, filesystem = storage_and_filesystem(storage_root(spec))
    param_space, search_alg, num_samples = search_setup(spec)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=s.metric,
            mode=s.mode,
            search_alg=search_alg,
            scheduler=make_scheduler(spec, int(meta.config["training"]["max_epochs"])),
            num_samples=num_samples,
            max_concurrent_trials=tuner_concurrency(search_alg, s.max_concurrent_trials),
            trial_dirname_creator=trial_dirname,
            # No reuse_actors: an ASHA-stopped trial's driver is still blocked in its Train run
            # when Tune tries to reset it, and Tune then fails the NEXT trial instead.
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=s.name,
            storage_path=storage,
            storage_filesystem=filesystem,
            # Ray Train retries worker failures inside a trial (sweep.max_failures); a trial that
            # still fails is left errored for `--resume` rather than retried blindly by Tune.
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[ReleaseFinishedTrials(experiment_dir)],
        ),
    )


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (Tune's default repeats every dotted parameter)."""
    return f"trial_{trial.trial_id}"


def tune_domain(param: Param) -> Any:
    """The Ray Tune sampling domain of a searched parameter."""
    from ray import tune

    if param.kind == "loguniform":
        return tune.loguniform(param.low, param.high)
    if param.kind == "uniform":
        return tune.uniform(param.low, param.high)
    return tune.choice(list(param.values))


def search_setup(spec: SweepSpec) -> tuple[dict[str, Any], Any, int]:
    """(param_space, search algorithm, num_samples) for the Tuner."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    s = spec.settings
    if s.search == "optuna" and spec.searched:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        from lpray.tune.searcher import GridCrossSearcher

        cells = spec.grid_cells()
        space = OptunaSearch.convert_search_space({p.key: tune_domain(p) for p in spec.searched})
        # The same sampler seed in every cell: the cells' random start-up trials try the same
        # loss settings, so label counts are compared at equal settings.
        inners = [
            OptunaSearch(
                space=space,
                metric=s.metric,
                mode=s.mode,
                sampler=optuna.samplers.TPESampler(
                    seed=s.seed, n_startup_trials=s.n_startup_trials
                ),
            )
            for _ in cells
        ]
        searcher = GridCrossSearcher(cells, inners, s.num_samples, s.metric, s.mode, TIME_ATTR)
        return {}, searcher, s.num_samples * len(cells)
    grid_points = s.grid_points
    space = {
        p.key: tune.grid_search(p.points(grid_points)) if p in spec.grid else tune_domain(p)
        for p in spec.params
    }
    # Tune wraps only Searchers in a ConcurrencyLimiter; a BasicVariantGenerator passed in must
    # carry the limit itself, or every trial's driver starts at once and Train workers queue
    # past their start-up timeout.
    generator = BasicVariantGenerator(random_state=s.seed, max_concurrent=s.max_concurrent_trials)
    return space, generator, s.num_samples


def tuner_concurrency(search_alg: Any, limit: int) -> int | None:
    """``TuneConfig.max_concurrent_trials`` for ``search_alg``: the limit for a Searcher (Tune
    wraps it in a ConcurrencyLimiter), None for lpray's BasicVariantGenerator, which carries the
    limit itself (:func:`search_setup`) and with which Tune ignores the argument with a warning."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return None if isinstance(search_alg, BasicVariantGenerator) else limit


def make_scheduler(spec: SweepSpec, max_epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = spec.settings
    if s.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr=TIME_ATTR,
        max_t=max_epochs,
        grace_period=s.asha.grace_period,
        reduction_factor=s.asha.reduction_factor,
    )


def _warn_if_oversubscribed(spec: SweepSpec) -> None:
    """Concurrent trials beyond the cluster's capacity wait for workers; say so up front."""
    import ray

    r = spec.settings.resources
    total = ray.cluster_resources()
    fits = [total.get("CPU", 0) / (r.workers * r.cpus_per_worker + r.trial_cpus)]
    if r.gpus_per_worker:
        fits.append(total.get("GPU", 0) / (r.workers * r.gpus_per_worker))
    capacity = int(min(fits) + 1e-9)
    if capacity < spec.settings.max_concurrent_trials:
        log.warning(
            "the cluster holds %d trial(s) at a time with these resources; "
            "sweep.max_concurrent_trials=%d trials will queue",
            capacity,
            spec.settings.max_concurrent_trials,
        )
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    problem = packing_problem(node_cpus, r.cpus_per_worker, r.trial_cpus)
    if problem:
        log.warning("%s", problem)


def packing_problem(
    node_cpus: list[float], cpus_per_worker: float, trial_cpus: float
) -> str | None:
    """Why trials can stall on these nodes, or None.

    A trial's driver (``trial_cpus``) lands on some node; once every node holds one, a Train
    worker needs ``cpus_per_worker`` on a node that already gives ``trial_cpus`` away. Nodes of
    exactly ``cpus_per_worker`` CPUs then fit no worker at all, and the trials wait until Ray
    Train's start-up timeout fails them (seen on 1-CPU nodes with 1-CPU workers).
    """
    if not node_cpus or max(node_cpus) >= cpus_per_worker + trial_cpus:
        return None
    return (
        f"no node has {cpus_per_worker} + {trial_cpus} CPUs (largest: {max(node_cpus):g}); once "
        f"every node runs a trial driver no Train worker fits: set "
        f"sweep.resources.cpus_per_worker below {max(node_cpus) - trial_cpus:g}"
    )
