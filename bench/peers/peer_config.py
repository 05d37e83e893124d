"""Write the Lightning Pose 2.4.3 (the peer) config for the side-by-side benchmark.

The peer ships no default config inside its wheel (its templates live in its source repository),
so every key its training and prediction code reads is written here. The choices that make the
comparison fair, and why:

- Split: LP 2.4.3 takes no explicit split file. It splits with ``torch.utils.data.random_split``
  seeded by ``training.rng_seed_data_pt``; train_prob 0.8 / val_prob 0.1 / seed 42 gives exactly
  the 72/9/9 frames of ``mirror-mouse-reference-split.json`` (the driver checks the ``set`` column
  the peer writes against that file after every run). The data seed therefore stays 42 for every
  benchmark seed; only ``rng_seed_model_pt`` (weight initialisation) follows the seed.
- Random init (``model.backbone_pretrained: false``): no ImageNet weights can be downloaded here.
- ``training.unfreezing_epoch: 0``: LP's default (20) would freeze a random backbone. LP still
  warms the backbone learning rate up from 0.1x by 1.5x per epoch after unfreezing (its fixed
  semantics; lpray trains the backbone at the full rate from the start).
- LR milestones at 1/2, 2/3 and 5/6 of ``max_epochs`` (LP's 150/200/250 of 300, and exactly
  lpray's formula), so LP's validation accepts short runs (it refuses milestones > max_epochs).
- 128x128 input, batch 16, resnet18, heatmap model, supervised only (``losses_to_use: []``).

Usable as a module (``write_peer_config``) or as a script (``python peer_config.py --help``).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

import yaml

# bench/common is standard library only, so the peer's own venv can import it too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import SHARED_DATA  # noqa: E402

DEFAULT_DATA_ROOT = SHARED_DATA / "mirror-mouse-example"
# LP's split of the 90-frame example with these three numbers is the reference split.
REFERENCE_TRAIN_PROB = 0.8
REFERENCE_VAL_PROB = 0.1
REFERENCE_DATA_SEED = 42
MILESTONE_FRACTIONS = (0.5, 2 / 3, 5 / 6)


def keypoint_names(csv_path: Path) -> list[str]:
    """Keypoint names in CSV column order, read from the second (bodyparts) header row.

    LP needs them listed in the config; reading them keeps the config right for any DLC-style CSV.
    """
    with csv_path.open(newline="") as handle:
        rows = csv.reader(handle)
        next(rows)  # scorer
        bodyparts = next(rows)[1:]
    names: list[str] = []
    for name in bodyparts:
        if name not in names:
            names.append(name)
    return names


def lr_milestones(max_epochs: int) -> list[int]:
    """Epochs at which the LR halves: the same fractions of the run as lpray and LP's defaults."""
    return sorted({max(1, int(max_epochs * f)) for f in MILESTONE_FRACTIONS})


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps per epoch in both packages (no drop_last: the last, short batch counts)."""
    return math.ceil(n_train / batch_size)


def build_peer_config(
    *,
    data_root: Path,
    max_epochs: int,
    seed: int,
    csv_file: str = "CollectedData.csv",
    image_size: tuple[int, int] = (128, 128),
    batch_size: int = 16,
    backbone: str = "resnet18",
    imgaug: str = "dlc",
    num_workers: int | None = None,
    val_every_n_epochs: int = 1,
    predict_batch_size: int = 64,
    gpu: bool = False,
    model_name: str = "peer_bench",
) -> dict[str, Any]:
    """Return the peer's config as plain data (a dict ready for YAML).

    ``num_workers=None`` leaves LP's own default (one loader worker per CPU core);
    ``predict_batch_size`` is LP's video-prediction window (``dali.base.predict.sequence_length``,
    also used by its OpenCV reader).
    """
    height, width = image_size
    names = keypoint_names(data_root / csv_file)
    training: dict[str, Any] = {
        "imgaug": imgaug,
        "train_batch_size": batch_size,
        "val_batch_size": batch_size,
        "test_batch_size": batch_size,
        "train_prob": REFERENCE_TRAIN_PROB,
        "val_prob": REFERENCE_VAL_PROB,
        "train_frames": 1,
        "num_gpus": 1 if gpu else 0,
        "early_stop_patience": 3,
        "unfreezing_epoch": 0,
        "min_epochs": max_epochs,
        "max_epochs": max_epochs,
        "log_every_n_steps": 5,
        "check_val_every_n_epoch": val_every_n_epochs,
        "rng_seed_data_pt": REFERENCE_DATA_SEED,
        "rng_seed_model_pt": seed,
        "lr_scheduler": "multisteplr",
        "lr_scheduler_params": {
            "multisteplr": {"milestones": lr_milestones(max_epochs), "gamma": 0.5}
        },
        "optimizer": "Adam",
        "optimizer_params": {"learning_rate": 1e-3},
    }
    if num_workers is not None:
        training["num_workers"] = num_workers
    return {
        "data": {
            "image_resize_dims": {"height": height, "width": width},
            "data_dir": str(data_root),
            "video_dir": str(data_root / "videos"),
            "csv_file": csv_file,
            "downsample_factor": 2,
            "num_keypoints": len(names),
            "keypoint_names": names,
        },
        "training": training,
        "model": {
            "losses_to_use": [],
            "backbone": backbone,
            "backbone_pretrained": False,
            "model_type": "heatmap",
            "heatmap_loss_type": "mse",
            "model_name": model_name,
        },
        "dali": {
            "general": {"seed": 123456},
            "base": {
                "train": {"sequence_length": 16},
                "predict": {"sequence_length": predict_batch_size},
            },
            "context": {
                "train": {"batch_size": 6},
                "predict": {"sequence_length": predict_batch_size},
            },
        },
        "losses": {
            "pca_multiview": {"log_weight": 5.0, "components_to_keep": 3, "epsilon": None},
            "pca_singleview": {"log_weight": 5.0, "components_to_keep": 0.99, "epsilon": None},
            "temporal": {"log_weight": 5.0, "epsilon": 20.0, "prob_threshold": 0.05},
        },
        "eval": {
            # Videos are predicted by a separate, timed `litpose predict`, not after training.
            "predict_vids_after_training": False,
            "save_vids_after_training": False,
            "test_videos_directory": str(data_root / "videos"),
            "confidence_thresh_for_vid": 0.9,
            "hydra_paths": [],
        },
        "callbacks": {
            "anneal_weight": {
                "attr_name": "total_unsupervised_importance",
                "init_val": 0.0,
                "increase_factor": 0.01,
                "final_val": 1.0,
                "freeze_until_epoch": 0,
            }
        },
    }


def write_peer_config(path: Path, **kwargs: Any) -> Path:
    """Write the peer config YAML to ``path`` (see :func:`build_peer_config` for the options)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(build_peer_config(**kwargs), sort_keys=False))
    return path


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="YAML file to write")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="rng_seed_model_pt (initialisation)")
    parser.add_argument("--image-size", type=int, nargs=2, default=[128, 128])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--imgaug", default="dlc", help="LP augmentation preset")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--val-every", type=int, default=1)
    parser.add_argument("--gpu", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write one config from the command line (the benchmark itself calls the module)."""
    args = _parse_args(argv)
    out = write_peer_config(
        args.out,
        data_root=args.data_root,
        max_epochs=args.max_epochs,
        seed=args.seed,
        image_size=(args.image_size[0], args.image_size[1]),
        batch_size=args.batch_size,
        imgaug=args.imgaug,
        num_workers=args.num_workers,
        val_every_n_epochs=args.val_every,
        gpu=args.gpu,
    )
    print(out)


if __name__ == "__main__":
    main()
