"""Typed run configuration: dataclasses loaded from YAML, validated on load.

One :class:`Config` describes a whole run (data, model, losses, training). It is read from YAML,
updated by ``section.key=value`` overrides from the command line, and checked once, here, so every
mistake is reported by key path ("losses.temporal.weight: expected a number, got 'high'") before
any data is read or any worker starts. A resolved copy is written into every model directory.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lpray.configkit import ConfigError as ConfigError
from lpray.configkit import apply_overrides, build, errors_in, load_mapping, require
from lpray.data.augment_spec import list_augment_presets
from lpray.data.reader_registry import list_backends
from lpray.losses.registry import get_loss, list_losses
from lpray.models.backbones import available_backbones, pretrained_weights
from lpray.models.model_types import list_model_types

log = logging.getLogger(__name__)


@dataclass
class SyntheticConfig:
    """How the built-in synthetic dataset is generated (used when ``data.root == "synthetic"``)."""

    seed: int = 0
    n_train_videos: int = 2
    n_test_videos: int = 1
    frames_per_video: int = 300
    n_labeled: int = 80
    frame_size: list[int] = field(default_factory=lambda: [128, 128])  # [height, width] of one view
    two_view: bool = False
    occlusion: bool = True
    codec: Literal["h264", "vp9", "mjpeg"] = "h264"


@dataclass
class DataConfig:
    """Where labeled frames and unlabeled videos come from, and how they are split."""

    # Project folder holding ``csv_file`` (image paths in it are relative to this folder), or
    # "synthetic" for the built-in generated dataset (made under ``synthetic_dir``).
    root: str = "synthetic"
    csv_file: str = "CollectedData.csv"
    # Unlabeled training videos: paths or globs, relative to ``root`` unless absolute / URLs.
    videos: list[str] = field(default_factory=lambda: ["videos/*"])
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    synthetic_dir: str = "outputs/synthetic"
    image_size: list[int] = field(default_factory=lambda: [256, 256])  # model input [height, width]
    keypoints: list[str] | None = None  # subset of the CSV's keypoints; None = all
    # Multi-view body parts: each inner list names one body part in every view (for pca_multiview).
    # None takes them from the synthetic project; [] means single view.
    view_groups: list[list[str]] | None = None
    train_prob: float = 0.95
    val_prob: float = 0.05
    split_seed: int = 0
    # Optional JSON file with explicit "train"/"val"/"test" image lists (overrides the probs).
    split_file: str | None = None
    # Labeled frames used for training: a count, a fraction of the train split, or None for all.
    train_frames: int | float | None = None
    video_backend: str = "auto"  # a video reader (lpray.data.reader_registry): auto, pyav, dali


@dataclass
class ModelConfig:
    """The heatmap network (DESIGN section 3)."""

    backbone: str = "resnet18"
    # Start from the backbone's pretrained weights (the registry names them: ImageNet, DINO /
    # DINOv2 for the ViTs, AP-10K animal pose for resnet50_animal_ap10k), downloaded once into
    # the torch hub / Hugging Face cache and verified (lpray.models.weights; LPRAY_OFFLINE=1:
    # never). Unset (None): true for a real project, as Lightning Pose and DeepLabCut start from
    # pretrained weights; false for the built-in synthetic data and for backbones that have no
    # weights (resolved on load, _resolve_pretrained; the saved config holds the outcome).
    pretrained: bool | None = None
    model_type: str = "heatmap"  # lpray.models.model_types: heatmap, context
    heatmap_sigma: float = 1.25  # Gaussian target width, heatmap pixels
    softmax_temperature: float = 100.0  # targets peak at 1: LP's 1000 on sum-to-1 maps ~ 100 here


@dataclass
class _LossesBase:
    """What every run has; each registered unsupervised loss adds its section (LossesConfig)."""

    supervised_weight: float = 1.0
    # "kl": KL divergence between the normalised target and the softmax soft-argmax decodes
    # (robust with unsupervised losses); "mse": Lightning Pose's plain heatmap MSE.
    heatmap_loss: Literal["kl", "mse"] = "mse"
    anneal_rate: float = 0.01  # unsupervised weights ramp 0 -> 1 by this much per epoch

    def active(self) -> dict[str, float]:
        """The unsupervised losses switched on, with their weights, in registry order."""
        weights = {name: getattr(self, name).weight for name in list_losses()}
        return {name: w for name, w in weights.items() if w > 0}


# One section per registered unsupervised loss (lpray.losses.registry), named after it: a new
# loss gets its config keys without an edit here.
LossesConfig = dataclasses.make_dataclass(
    "LossesConfig",
    [
        (name, get_loss(name).config, field(default_factory=get_loss(name).config))
        for name in list_losses()
    ],
    bases=(_LossesBase,),
)
LossesConfig.__module__ = __name__  # pickled by reference (Ray workers) as lpray.config's
LossesConfig.__doc__ = (
    "total = supervised_weight * heatmap loss + anneal(epoch) * sum_i weight_i * L_i; one "
    "section per unsupervised loss of lpray.losses.registry (temporal, pca_singleview, ...)."
)


@dataclass
class TrainingConfig:
    max_epochs: int = 100
    batch_size: int = 16  # labeled frames per step (per worker under Ray Train)
    unlabeled_sequences: int = 1  # unlabeled sequences per step (per worker)
    sequence_length: int = 16  # frames per unlabeled sequence
    # DALI pipelines decoding unlabeled sequences in parallel, per worker (0: 4 on a GPU, else 1).
    # Each random sequence of long-GOP video is a seek plus a decode from the previous keyframe;
    # on one H100, 4 readers vs 1 gave +7% training frames/s (bench/README.md).
    unlabeled_readers: int = 0
    # Small label sets repeat their frames (new augmentation each time) so that an epoch has at
    # least this many steps per worker; 0: an epoch is one pass over the labeled frames.
    min_steps_per_epoch: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.0
    unfreeze_epoch: int = 0  # backbone frozen before this epoch (useful with pretrained weights)
    seed: int = 0
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    channels_last: bool = False
    # torch.compile the backbone (training): a minute or two of compiling at the first step. On
    # one H100 it did not speed a ResNet-50 semi-supervised step up (bench/README.md).
    compile: bool = False
    # CUDA-graph the backbone's training forward + backward (one GPU, fixed step shape): eager
    # PyTorch launches ~1,000 kernels a step from Python, which on one H100 took longer on the
    # host than the GPU took to run them (bench/README.md, bench/profile_train.py).
    cuda_graphs: bool = False
    num_workers: int = 0  # DataLoader worker processes for labeled frames
    # Where labeled frames are warped and photometrically augmented: "loader" (CPU workers),
    # "device" (the training device, a batch at a time), "auto" (device on a GPU, else loader).
    labeled_augment_on: Literal["auto", "loader", "device"] = "auto"
    # Augmentation preset (lpray.data.augment_spec.AUGMENT_PRESETS) of the labeled frames and the
    # unlabeled clips: "mild" (small rotation/zoom/shift, contrast, brightness, blur), "strong"
    # (labeled frames modelled on Lightning Pose's "dlc" preset: +-25 deg rotations, crops,
    # motion blur, coarse dropout, salt/pepper blobs; more accurate with few labels, bench/peers;
    # clips as in "mild"), or "none" (neither changes).
    augmentation: str = "mild"
    val_every_n_epochs: int = 1
    # Seconds between writes of checkpoints/last.ckpt (the full resume state, at an epoch's end;
    # the final epoch is always written); 0 writes it every epoch. A short-epoch run (mirror-mouse:
    # 5 steps) spent a third of its time writing it every epoch; a crash now costs at most this
    # much training.
    last_checkpoint_every_s: float = 60.0
    # Ray Train / Tune runs: epoch checkpoints kept on storage, the latest plus the best ones by
    # validation pixel error (2: the latest and the best; the latest is always kept, since a
    # restart resumes from it). Keeping every epoch's resumable checkpoint (ResNet-18 with Adam's
    # state: 134 MB, measured on the tiny test project) would put 13.4 GB on storage over a
    # 100-epoch run; with 2 it stays under 270 MB.
    keep_checkpoints: int = 2
    log_every_n_steps: int = 5
    output_dir: str = "outputs/model"
    progress_bar: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    losses: LossesConfig = field(default_factory=LossesConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Checks and loading (the machinery: lpray.configkit)


def _check(cfg: Config) -> None:
    """Value checks that types cannot express; each error names its key."""

    need = require

    d, m, lo, t = cfg.data, cfg.model, cfg.losses, cfg.training
    need(
        len(d.image_size) == 2 and all(s >= 32 and s % 32 == 0 for s in d.image_size),
        "data.image_size",
        f"must be [height, width], multiples of 32 (>= 32), got {d.image_size}",
    )
    need(0 < d.train_prob <= 1, "data.train_prob", f"must be in (0, 1], got {d.train_prob}")
    need(0 <= d.val_prob < 1, "data.val_prob", f"must be in [0, 1), got {d.val_prob}")
    need(
        d.train_prob + d.val_prob <= 1 + 1e-9,
        "data.val_prob",
        f"train_prob + val_prob must be <= 1, got {d.train_prob} + {d.val_prob}",
    )
    if isinstance(d.train_frames, float):
        need(
            0 < d.train_frames <= 1,
            "data.train_frames",
            f"a fraction must be in (0, 1], got {d.train_frames}",
        )
    elif isinstance(d.train_frames, int):
        need(d.train_frames >= 1, "data.train_frames", f"must be >= 1, got {d.train_frames}")
    # Names that a registry owns: checked against it, so adding one is a registry line.
    for key, what, value, names in (
        ("model.backbone", "backbone", m.backbone, available_backbones()),
        ("model.model_type", "model type", m.model_type, list_model_types()),
        ("training.augmentation", "augmentation preset", t.augmentation, list_augment_presets()),
        ("data.video_backend", "video backend", d.video_backend, list_backends()),
    ):
        need(value in names, key, f"unknown {what} {value!r}; choose one of {list(names)}")
    need(
        m.pretrained is not True or pretrained_weights(m.backbone) is not None,
        "model.pretrained",
        f"no pretrained weights exist for {m.backbone}: set model.pretrained=false (random "
        "initialisation) or choose one of "
        f"{[n for n in available_backbones() if pretrained_weights(n) is not None]}",
    )
    need(m.heatmap_sigma > 0, "model.heatmap_sigma", "must be > 0")
    need(m.softmax_temperature > 0, "model.softmax_temperature", "must be > 0")
    need(lo.supervised_weight >= 0, "losses.supervised_weight", "must be >= 0")
    need(lo.anneal_rate > 0, "losses.anneal_rate", "must be > 0")
    for name in list_losses():
        settings = getattr(lo, name)
        need(settings.weight >= 0, f"losses.{name}.weight", "must be >= 0")
        for key, message in get_loss(name).problems(settings):
            need(False, f"losses.{name}.{key}", message)
    need(t.max_epochs >= 1, "training.max_epochs", "must be >= 1")
    need(t.batch_size >= 1, "training.batch_size", "must be >= 1")
    need(t.unlabeled_sequences >= 1, "training.unlabeled_sequences", "must be >= 1")
    need(t.unlabeled_readers >= 0, "training.unlabeled_readers", "must be >= 0 (0: automatic)")
    need(t.min_steps_per_epoch >= 0, "training.min_steps_per_epoch", "must be >= 0")
    need(t.sequence_length >= 2, "training.sequence_length", "must be >= 2 (temporal loss pairs)")
    need(t.lr > 0, "training.lr", f"must be > 0, got {t.lr}")
    need(t.weight_decay >= 0, "training.weight_decay", "must be >= 0")
    need(t.num_workers >= 0, "training.num_workers", "must be >= 0")
    need(t.val_every_n_epochs >= 1, "training.val_every_n_epochs", "must be >= 1")
    need(t.last_checkpoint_every_s >= 0, "training.last_checkpoint_every_s", "must be >= 0")
    need(
        t.keep_checkpoints >= 1,
        "training.keep_checkpoints",
        f"must be >= 1 (the latest checkpoint is what a restart resumes from), got "
        f"{t.keep_checkpoints}",
    )


def is_builtin_synthetic(data: DataConfig) -> bool:
    """Whether ``data.root`` is lpray's generated synthetic data: ``"synthetic"``, or a folder
    ``lpray synthetic`` made (its ``project.yaml`` says ``format: lpray-synthetic``)."""
    if data.root == "synthetic":
        return True
    marker = Path(data.root) / "project.yaml"
    if "://" in data.root or not marker.is_file():
        return False
    try:
        meta = yaml.safe_load(marker.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(meta, dict) and meta.get("format") == "lpray-synthetic"


def _resolve_pretrained(cfg: Config) -> None:
    """Set an unset ``model.pretrained``: true for a real project whose backbone has weights.

    The synthetic data keeps random initialisation: its demo and test networks are
    reduced-width ResNets (no weights exist) and its numbers are measured from random init.
    """
    m = cfg.model
    if m.pretrained is not None:
        return
    weights = pretrained_weights(m.backbone)
    m.pretrained = weights is not None and not is_builtin_synthetic(cfg.data)
    if m.pretrained:
        log.info(
            "model.pretrained unset: %s starts from %s weights, the default for a real project "
            "(model.pretrained=false for random initialisation)",
            m.backbone,
            weights,
        )
    else:
        why = "no pretrained weights exist for it" if weights is None else "built-in synthetic data"
        log.info(
            "model.pretrained unset: %s starts from random initialisation (%s)", m.backbone, why
        )


def config_from_dict(values: dict[str, Any] | None) -> Config:
    """Build and validate a :class:`Config` from nested plain values (e.g. parsed YAML), with
    ``model.pretrained`` resolved when unset (:func:`_resolve_pretrained`)."""
    cfg = build(Config, values or {})
    _check(cfg)
    _resolve_pretrained(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    ``path`` may be a URL (the config a pipeline stage stored in a bucket).

    Raises:
        ConfigError: naming the file and key of the first problem found.
    """
    values = load_mapping(path, "config", "a mapping of sections") if path is not None else {}
    with errors_in(path):
        return config_from_dict(apply_overrides(values, overrides or []))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from lpray.io.storage import atomic_write

    with atomic_write(path, "w") as handle:
        yaml.safe_dump(cfg.to_dict(), handle, sort_keys=False)
