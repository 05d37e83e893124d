"""One Tune trial = one Ray Train run of the trial's config (Ray Train V2's Tune-over-Train form).

Train V2 TorchTrainers cannot be handed to a ``Tuner``; each trial is instead a small driver
function that builds a :func:`lpray.train.distributed.make_torch_trainer` run and fits it. The run
is named after the Tune trial id and lives under the sweep's storage, so a trial that is started
again (``lpray sweep --resume`` after a killed driver, or Tune retrying an errored trial) finds its
own Train run and continues from the latest epoch checkpoint instead of starting over.

Each epoch the Train controller appends the rank-0 metrics to the trial's epoch log (see
:mod:`lpray.tune.store`) and forwards them to Tune (``TuneReportCallback``). A restarted trial first
replays its logged epochs to Tune, so Tune's view of the trial (its metric history, ASHA's rungs,
the searcher's result) is complete again; a trial whose log already reaches the last epoch is not
trained at all, which makes a restart of a finished trial (one the killed driver had not yet
recorded as finished) free.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from lpray.tune.cleanup import PlacementGroupRecorder, placement_groups_path
from lpray.tune.space import Resources, trial_config
from lpray.tune.store import (
    append_epoch_log,
    epoch_log_path,
    latest_per_epoch,
    read_epoch_log,
    train_storage,
)

TIME_ATTR = "trained_epochs"  # epochs done (epoch + 1): what ASHA counts in


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares (passed with ``tune.with_parameters``)."""

    base: dict[str, Any]  # base config, nested
    experiment_dir: str
    resources: Resources
    max_failures: int


class EpochForwarder(TuneReportCallback):
    """Logs each epoch's metrics to the trial's epoch log, then forwards them to Tune.

    Runs in the Train controller, after the epoch's checkpoint is persisted, so a logged epoch is
    always one a restarted run can resume after.
    """

    def __init__(self, log_path: str) -> None:
        super().__init__()
        self.log_path = log_path
        self.attempt = uuid.uuid4().hex[:8]  # tells the rows of two runs of one trial apart
        self._last = time.time()

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        now = time.time()
        row = {key: _plain(value) for key, value in metrics[0].items()}
        row[TIME_ATTR] = int(row["epoch"]) + 1
        row["epoch_seconds"] = now - self._last  # includes the run's start-up for the first
        row["attempt"] = self.attempt
        row["reported_at"] = now
        self._last = now
        append_epoch_log(self.log_path, row)
        super().after_report(run_context, [row, *metrics[1:]], checkpoint)


def _plain(value: Any) -> Any:
    """JSON-ready metric values (tensors and numpy scalars become floats)."""
    if hasattr(value, "item"):
        return value.item()
    return value


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """The Tune trainable: replay logged epochs, then train the rest on Ray Train."""
    from ray import tune

    from lpray.train.distributed import make_torch_trainer

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(setup.base, params)
    log_path = epoch_log_path(setup.experiment_dir, trial_id)
    done = latest_per_epoch(read_epoch_log(log_path))
    for row in done:
        tune.report(row)
    if done and int(done[-1]["epoch"]) + 1 >= cfg.training.max_epochs:
        return
    r = setup.resources
    trainer = make_torch_trainer(
        cfg,
        num_workers=r.workers,
        gpus_per_worker=r.gpus_per_worker,
        cpus_per_worker=r.cpus_per_worker,
        storage_path=train_storage(setup.experiment_dir),
        max_failures=setup.max_failures,
        name=trial_id,
    )
    # make_torch_trainer takes no callbacks; the trainer reads run_config.callbacks in fit().
    run_config = trainer.run_config
    run_config.callbacks = [
        *(run_config.callbacks or []),
        EpochForwarder(log_path),
        PlacementGroupRecorder(placement_groups_path(setup.experiment_dir, trial_id)),
    ]
    trainer.fit()
