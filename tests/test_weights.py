"""Pretrained weight files: fetched into the torch hub cache (a file:// mirror stands in for the
network: tests never download), verified by the hash in their name, refused when corrupt, and
one clear error offline."""

from __future__ import annotations

import hashlib

import pytest
import torch

from lpray.models.backbones import check_pretrained_cached
from lpray.models.weights import PretrainedWeightsUnavailable, cache_dir, load_weights


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("LPRAY_OFFLINE", raising=False)
    return tmp_path / "torch-home"


def published(folder, state) -> str:
    """``state`` saved as ``weights-<sha256 prefix>.pth`` in ``folder``; its file:// URL."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw.pth"
    torch.save(state, raw)
    name = f"weights-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.pth"
    raw.rename(folder / name)
    return (folder / name).as_uri()


def test_a_published_file_is_fetched_verified_cached_and_loaded(tmp_path, torch_home):
    state = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4)}
    url = published(tmp_path / "mirror", state)
    loaded = load_weights(url, "test weights")
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    cached = cache_dir() / url.rsplit("/", 1)[-1]
    assert cached.is_file() and str(cached).startswith(str(torch_home))
    # the mirror gone: the cached copy serves
    (tmp_path / "mirror" / cached.name).unlink()
    assert torch.equal(load_weights(url, "test weights")["conv.bias"], state["conv.bias"])


def test_a_file_that_does_not_match_its_hash_is_refused(tmp_path, torch_home):
    url = published(tmp_path / "mirror", {"w": torch.zeros(3)})
    cached = cache_dir() / url.rsplit("/", 1)[-1]
    load_weights(url, "test weights")
    cached.write_bytes(cached.read_bytes()[:-10])  # truncated on disk later
    with pytest.raises(PretrainedWeightsUnavailable, match="corrupt.*delete it"):
        load_weights(url, "test weights")


def test_corrupt_imagenet_weights_are_refused_naming_the_file(torch_home, monkeypatch):
    monkeypatch.setenv("LPRAY_OFFLINE", "1")
    import torchvision

    url = torchvision.models.get_model_weights("resnet18").IMAGENET1K_V1.url
    target = cache_dir() / url.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the weights")
    with pytest.raises(PretrainedWeightsUnavailable, match=f"{target}.*corrupt"):
        check_pretrained_cached("resnet18")


def test_offline_without_the_file_names_file_url_and_destination(torch_home, monkeypatch):
    monkeypatch.setenv("LPRAY_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        check_pretrained_cached("resnet50")
    message = str(error.value)
    assert "https://download.pytorch.org/models/resnet50-" in message
    assert str(torch_home / "hub" / "checkpoints") in message and "LPRAY_OFFLINE" in message
