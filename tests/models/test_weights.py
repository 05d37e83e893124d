"""Pretrained weight files: fetched into the torch hub cache (a file:// mirror stands in for the
network: tests never download), verified by the hash in their name, refused when corrupt, and
one clear error offline."""

from __future__ import annotations

import hashlib

import numpy as np
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


def mmpose_checkpoint(folder, state, name="res50_ap10k_256x256", date="20211029") -> str:
    """``state`` as OpenMMLab publishes a checkpoint: ``{"meta", "state_dict"}`` in torch's
    legacy format, named ``<name>-<8 hex of its sha256>_<date>.pth``; its file:// URL."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw.pth"
    # MMCV's meta keeps the best validation AP as a numpy scalar
    checkpoint = {"meta": {"epoch": 210, "hook_msgs": {"best_score": np.float64(0.68)}}}
    torch.save({**checkpoint, "state_dict": state}, raw, _use_new_zipfile_serialization=False)
    # the 2021 file was pickled under numpy 1, whose scalar constructor lives in numpy.core
    data = raw.read_bytes().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\nscalar" in data
    raw.write_bytes(data)
    final = folder / f"{name}-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}_{date}.pth"
    raw.rename(final)
    return final.as_uri()


def test_ap10k_weights_load_into_the_resnet50_trunk_with_every_key_mapped(
    tmp_path, torch_home, monkeypatch
):
    import torchvision
    from torch import nn

    from lpray.models import backbones, trunks

    torch.manual_seed(5)
    reference = torchvision.models.resnet50(weights=None)
    # values no fresh initialisation has, in a range a 50-layer forward pass keeps finite
    for module in reference.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.data.mul_(1 + 0.2 * torch.rand_like(module.weight))
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    body = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    head = {"keypoint_head.final_layer.weight": torch.randn(17, 256, 1, 1)}
    published_state = {f"backbone.{k}": v for k, v in body.items()} | head
    url = mmpose_checkpoint(tmp_path / "mirror", published_state)
    monkeypatch.setattr(trunks, "AP10K_URL", url)

    backbones.check_pretrained_cached("resnet50_animal_ap10k")  # fetched and verified
    assert (cache_dir() / url.rsplit("/", 1)[-1]).is_file()
    trunk, channels = backbones.build_backbone("resnet50_animal_ap10k", pretrained=True)
    loaded = trunk.state_dict()
    mapped = trunks.mmpose_to_trunk(published_state)
    assert channels == 2048
    assert len(mapped) == len(body) == len(loaded)  # every trunk key, the head's dropped
    assert all(torch.equal(loaded[k], v) for k, v in mapped.items())
    expected = nn.Sequential(*list(reference.children())[:-2]).eval()
    frames = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(trunk.eval()(frames), expected(frames), rtol=0, atol=0)


def test_an_mmpose_file_is_verified_by_the_hash_before_its_date(tmp_path, torch_home):
    url = mmpose_checkpoint(tmp_path / "mirror", {"backbone.conv1.weight": torch.zeros(2)})
    path = tmp_path / "mirror" / url.rsplit("/", 1)[-1]
    wrong = path.with_name(path.name.replace("-", "-0000", 1))  # "-0000<hash>_<date>.pth"
    path.rename(wrong)
    with pytest.raises(PretrainedWeightsUnavailable, match="could not download"):
        load_weights(wrong.as_uri(), "test weights")
    wrong.rename(path)
    assert load_weights(url, "test weights", numpy_scalars=True)["meta"]["epoch"] == 210


def test_offline_ap10k_error_names_lightning_poses_file(torch_home, monkeypatch):
    monkeypatch.setenv("LPRAY_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsUnavailable, match="AP-10K") as error:
        check_pretrained_cached("resnet50_animal_ap10k")
    assert "https://download.openmmlab.com/mmpose/animal/resnet/res50_ap10k_256x256-35760eb8_" in (
        str(error.value)
    )
