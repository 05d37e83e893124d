"""A searcher that crosses a grid with a model-based search: one searcher per grid cell.

Optuna cannot take ``tune.grid_search`` dimensions (``OptunaSearch`` refuses them: "Grid search
parameters cannot be automatically converted"), and making the label count a categorical would let
TPE spend most trials on whichever count it likes best. A label-count sweep needs every count run
with the same budget, and the best loss weights may differ between counts (fewer labels, more to
gain from the unsupervised losses). So each grid cell gets its own inner searcher (its own TPE
model, learning only from that cell's trials), the cells take turns, and the whole thing is ONE
Tune experiment: one trial table, one ``max_concurrent_trials``, one scheduler, one resumable
experiment directory. Tune saves and restores this searcher's state with the experiment.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher


class GridCrossSearcher(Searcher):
    """Runs ``samples_per_cell`` suggestions of its own inner searcher for each grid cell.

    Args:
        cells: The grid: one dict of fixed values per cell, merged into that cell's suggestions.
        inners: One searcher per cell (each already given its search space, metric and mode).
        samples_per_cell: Trials per cell.
        progress_attr: A result key that grows with training (epochs done); results that do not
            advance it (a resumed trial replaying its logged epochs) are not passed on again.
    """

    def __init__(
        self,
        cells: list[dict[str, Any]],
        inners: list[Searcher],
        samples_per_cell: int,
        metric: str | None = None,
        mode: str | None = None,
        progress_attr: str | None = None,
    ) -> None:
        if len(cells) != len(inners) or not cells:
            raise ValueError("GridCrossSearcher needs one inner searcher per grid cell")
        super().__init__(metric=metric, mode=mode)
        self._cells = [dict(cell) for cell in cells]
        self._inners = list(inners)
        self._samples = samples_per_cell
        self._suggested = [0] * len(cells)
        self._cell_of: dict[str, int] = {}
        self._progress_attr = progress_attr
        self._progress: dict[str, float] = {}

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        # The space lives in the inner searchers; Tune's param_space holds no search domains.
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next cell with the fewest trials so far gets the trial (round robin)."""
        open_cells = [i for i, n in enumerate(self._suggested) if n < self._samples]
        if not open_cells:
            return Searcher.FINISHED
        for index in sorted(open_cells, key=lambda i: (self._suggested[i], i)):
            suggestion = self._inners[index].suggest(trial_id)
            if suggestion is None or suggestion == Searcher.FINISHED:
                continue  # that cell's searcher is waiting on results; try another cell
            self._suggested[index] += 1
            self._cell_of[trial_id] = index
            return {**suggestion, **self._cells[index]}
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._cell_of:
            return
        if self._progress_attr is not None and self._progress_attr in result:
            progress = float(result[self._progress_attr])
            if progress <= self._progress.get(trial_id, float("-inf")):
                return
            self._progress[trial_id] = progress
        self._inners[self._cell_of[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._cell_of:
            self._inners[self._cell_of[trial_id]].on_trial_complete(trial_id, result, error)

    def cell_counts(self) -> list[int]:
        """Trials suggested so far per cell."""
        return list(self._suggested)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__.copy(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))
