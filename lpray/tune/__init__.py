"""Sweeps on Ray Tune: loss weights, label counts and more, each trial a Ray Train run.

- :mod:`~lpray.tune.space`: the sweep file (search spaces over dotted config keys, settings),
  validated against the config and the labeled data before anything starts.
- :mod:`~lpray.tune.searcher`: one Optuna TPE per cell of a grid (e.g. per label count).
- :mod:`~lpray.tune.trial`: the trial function (builds and fits a TorchTrainer named after the
  trial, logs and forwards each epoch).
- :mod:`~lpray.tune.cleanup`: gives back the workers' resources of early-stopped trials.
- :mod:`~lpray.tune.store`: what a sweep keeps beside Tune's files (config, epoch logs).
- :mod:`~lpray.tune.sweep`: build, run and resume the Tuner.
- :mod:`~lpray.tune.results` and :mod:`~lpray.tune.plots`: tables, best configs, figures.
"""
