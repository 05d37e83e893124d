"""Give back the workers' resources of trials that Tune stopped early (ASHA) or that errored.

A Ray Train run reserves its workers' CPUs/GPUs in a placement group that belongs to the JOB,
not to the Train controller that created it. When ASHA stops a trial, Tune ends the trial's actor,
the controller dies with it, and nothing removes the placement group: Train V2's own
``PlacementGroupCleaner`` only helps where the state API answers (a dashboard is running and the
cluster address is unambiguous), which is not so under ``include_dashboard=False`` or on a host
running several Ray instances. Each stopped trial would then keep its workers' resources until the
sweep ends, and a sweep that stops more trials than the cluster has slots for would hang waiting
for workers.

So both ends are handled here: :class:`PlacementGroupRecorder` (a Train callback, in the
controller) writes each worker group's placement group id to the sweep's storage, and
:class:`ReleaseFinishedTrials` (a Tune callback, in the sweep driver) removes the placement groups
of every trial that completed, stopped or errored. Removing one that the controller already
removed on a clean exit is a no-op.
"""

from __future__ import annotations

import json
from typing import Any

from ray import tune
from ray.train.v2._internal.execution.callback import WorkerGroupCallback

from lpray.io.storage import atomic_write, exists, filesystem, join

PLACEMENT_GROUPS = "lpray/placement_groups"


def placement_groups_path(experiment_dir: str, trial_id: str) -> str:
    return join(experiment_dir, PLACEMENT_GROUPS, f"{trial_id}.json")


def read_placement_groups(path: str) -> list[str]:
    if not exists(path):
        return []
    fs, inner = filesystem(path)
    with fs.open(inner, "r") as handle:
        return json.load(handle)


class PlacementGroupRecorder(WorkerGroupCallback):
    """Records the placement group of every worker group a trial's Train run starts."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_worker_group_start(self, worker_group: Any) -> None:
        state = worker_group.get_worker_group_state()
        pg_id = state.placement_group_handle.placement_group.id.hex()
        ids = read_placement_groups(self.path)
        with atomic_write(self.path, "w") as handle:
            json.dump([*ids, pg_id], handle)


class ReleaseFinishedTrials(tune.Callback):
    """Removes a trial's recorded placement groups once Tune is done with the trial."""

    def __init__(self, experiment_dir: str) -> None:
        self.experiment_dir = experiment_dir

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        release_trial(self.experiment_dir, trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        release_trial(self.experiment_dir, trial.trial_id)


def release_trial(experiment_dir: str, trial_id: str) -> int:
    """Remove the trial's placement groups that still exist; returns how many were removed."""
    from ray._raylet import PlacementGroupID
    from ray.util import placement_group_table
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    removed = 0
    for pg_id in read_placement_groups(placement_groups_path(experiment_dir, trial_id)):
        group = PlacementGroup(PlacementGroupID(bytes.fromhex(pg_id)))
        if placement_group_table(group).get("state") in ("CREATED", "PENDING", "RESCHEDULING"):
            try:
                remove_placement_group(group)
                removed += 1
            except Exception:  # removed meanwhile by the controller's own shutdown
                pass
    return removed
