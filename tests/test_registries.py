"""Names that registries own, taken by the config and the CLI from them: video readers and
backends (lpray.data.reader_registry), model types (lpray.models.model_types)."""

from __future__ import annotations

import argparse
import inspect

import pytest
import torch

from lpray.commands import predict, track
from lpray.config import ConfigError, config_from_dict
from lpray.data.reader_registry import get_reader, list_backends, list_readers, readers_of
from lpray.data.readers import choose_backend
from lpray.data.video import VideoInfo
from lpray.models.heatmap import build_model
from lpray.models.model_types import list_model_types
from lpray.options import BACKENDS
from lpray.track.tasks import TrackSettings


@pytest.mark.parametrize("name", list_readers())
def test_every_reader_resolves(name):
    reader = get_reader(name)
    assert reader.backend in list_backends() and reader in readers_of(reader.backend)
    assert reader.decodes_on in ("cpu", "gpu")
    training, prediction = reader.producer("training"), reader.producer("prediction")
    # one call site each (make_unlabeled_loader, iter_prediction_chunks): one signature each
    pyav = get_reader("pyav")
    assert inspect.signature(training).parameters.keys() == (
        inspect.signature(pyav.producer("training")).parameters.keys()
    )
    assert inspect.signature(prediction).parameters.keys() == (
        inspect.signature(pyav.producer("prediction")).parameters.keys()
    )


@pytest.mark.parametrize("backend", [b for b in list_backends() if len(readers_of(b)) == 1])
def test_a_backend_of_one_reader_chooses_it(backend):
    info = VideoInfo("clip.mp4", "h264", "yuv420p", 64, 64, 10, 30.0, False)
    assert choose_backend(backend, [info], "cpu") == readers_of(backend)[0].name


@pytest.mark.parametrize("backend", list_backends())
def test_every_backend_is_a_config_cli_and_track_choice(backend):
    assert config_from_dict({"data": {"video_backend": backend}}).data.video_backend == backend
    assert TrackSettings(backend=backend).backend == backend
    for command in (predict, track):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        action = next(a for a in parser._actions if a.dest == "backend")
        assert list(action.choices) == list(BACKENDS) == list(list_backends())


def test_unknown_readers_and_backends_are_refused_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"backend must be one of \['auto', 'pyav', 'dali'"):
        TrackSettings(backend="dalii")
    with pytest.raises(ConfigError, match=r"data.video_backend: .*'dalii'.*'auto', 'pyav', 'dali'"):
        config_from_dict({"data": {"video_backend": "dalii"}})
    with pytest.raises(ValueError, match=r"'dalii'; choose one of \('auto', 'pyav', 'dali'"):
        choose_backend("dalii", [], "cpu")
    with pytest.raises(ValueError, match=r"'opencv'.*'pyav', 'dali-cpu', 'dali-gpu'"):
        get_reader("opencv")


@pytest.mark.parametrize("model_type", list_model_types())
def test_every_model_type_builds_and_the_config_takes_it(model_type):
    cfg = config_from_dict({"model": {"model_type": model_type, "backbone": "resnet18_w16"}})
    model = build_model(cfg.model.model_type, cfg.model.backbone, n_keypoints=3)
    frames = torch.zeros(1, 2 * model.context + 1, 3, 64, 64)
    with torch.no_grad():
        assert model(frames)["heatmaps"].shape[:2] == (1, 3)


def test_unknown_model_types_and_backbones_are_refused_naming_the_valid_ones():
    with pytest.raises(ConfigError, match=r"model.model_type: .*'ctx'.*'heatmap', 'context'"):
        config_from_dict({"model": {"model_type": "ctx"}})
    with pytest.raises(ConfigError, match=r"model.backbone: unknown backbone 'resnet9'.*resnet18"):
        config_from_dict({"model": {"backbone": "resnet9"}})
