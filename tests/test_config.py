"""Config loading: defaults, overrides, and errors that name the key."""

from __future__ import annotations

import pytest

from lpray.config import Config, ConfigError, load_config, save_config


def test_defaults_follow_the_design():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.training.lr == 1e-3
    assert cfg.losses.anneal_rate == 0.01
    assert cfg.losses.temporal.epsilon == 20.0
    assert cfg.losses.pca_singleview.variance_explained == 0.99
    assert cfg.losses.pca_multiview.n_components == 3
    assert cfg.losses.active() == {}  # unsupervised losses are opt-in


def test_overrides_are_typed_and_nested(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  max_epochs: 7\nlosses:\n  temporal:\n    weight: 1.0e-3\n")
    cfg = load_config(
        path,
        [
            "training.max_epochs=2",
            "data.train_frames=75",
            "losses.pca_singleview.weight=1e-4",
            "data.image_size=[64,96]",
        ],
    )
    assert cfg.training.max_epochs == 2
    assert cfg.data.train_frames == 75 and isinstance(cfg.data.train_frames, int)
    assert cfg.losses.temporal.weight == 1e-3
    assert cfg.losses.pca_singleview.weight == 1e-4  # "1e-4" is a string in YAML 1.1
    assert cfg.data.image_size == [64, 96]
    assert cfg.losses.active() == {"temporal": 1e-3, "pca_singleview": 1e-4}
    assert load_config(path, ["data.train_frames=0.5"]).data.train_frames == 0.5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.epochs=3", "unknown config key training.epochs"),
        ("nonsense.key=3", "unknown config key nonsense"),
        ("training.lr=fast", "training.lr: expected a number"),
        ("training.max_epochs=2.5", "training.max_epochs: expected an integer"),
        ("model.backbone=vgg16", "model.backbone: unknown backbone 'vgg16'"),
        ("data.image_size=[100,100]", "data.image_size: must be [height, width], multiples of 32"),
        ("data.train_frames=1.5", "data.train_frames: a fraction must be in (0, 1]"),
        ("losses.temporal.weight=-1", "losses.temporal.weight: must be >= 0"),
        ("training.precision=64", "training.precision: must be one of"),
        ("training.keep_checkpoints=0", "training.keep_checkpoints: must be >= 1"),
        ("model.pretrained=maybe", "model.pretrained: expected true/false"),
        ("training.max_epochs", "expected section.key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        load_config(None, [override])


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  batch_sizes: 4\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key training\.batch_sizes"):
        load_config(path)
    path.write_text("training: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["losses.temporal.epsilon=[1.0, 2.5]", "data.keypoints=[a, b]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


# model.pretrained unset: pretrained weights for a real project, random init for the synthetic data


def _real_project(tmp_path):
    (tmp_path / "CollectedData.csv").write_text("")  # a folder that is not lpray's synthetic data
    return str(tmp_path)


@pytest.mark.parametrize(
    ("backbone", "weights"),
    [
        ("resnet50", "ImageNet (torchvision)"),
        ("resnet50_animal_ap10k", "AP-10K animal pose (MMPose)"),
        ("vit_small_dinov2", "DINOv2 (timm)"),
    ],
)
def test_pretrained_defaults_to_true_for_a_real_project_and_says_which_weights(
    tmp_path, caplog, backbone, weights
):
    caplog.set_level("INFO", logger="lpray")
    cfg = load_config(None, [f"data.root={_real_project(tmp_path)}", f"model.backbone={backbone}"])
    assert cfg.model.pretrained is True
    assert f"{backbone} starts from {weights} weights" in caplog.text
    # the saved config holds the outcome, so a model directory never depends on the rule
    save_config(cfg, tmp_path / "saved.yaml")
    assert "pretrained: true" in (tmp_path / "saved.yaml").read_text()


def test_pretrained_default_is_random_init_for_synthetic_data_and_weightless_backbones(
    tmp_path, tiny_project, caplog
):
    caplog.set_level("INFO", logger="lpray")
    assert load_config().model.pretrained is False  # data.root: synthetic
    assert "resnet18 starts from random initialisation (built-in synthetic data)" in caplog.text
    # a folder lpray synthetic made is the synthetic data too
    assert load_config(None, [f"data.root={tiny_project}"]).model.pretrained is False
    real = _real_project(tmp_path)
    caplog.clear()
    reduced = load_config(None, [f"data.root={real}", "model.backbone=resnet18_w16"])
    assert reduced.model.pretrained is False
    assert "no pretrained weights exist" in caplog.text
    # an explicit choice is kept and not commented on
    caplog.clear()
    assert load_config(None, [f"data.root={real}", "model.pretrained=false"]).model.pretrained is (
        False
    )
    assert "model.pretrained" not in caplog.text


def test_pretrained_true_without_weights_names_the_key_and_the_choices():
    with pytest.raises(
        ConfigError,
        match=r"model\.pretrained: no pretrained weights exist for "
        r"resnet18_w32: set model\.pretrained=false .*'resnet50_animal_ap10k'",
    ):
        load_config(None, ["model.backbone=resnet18_w32", "model.pretrained=true"])
