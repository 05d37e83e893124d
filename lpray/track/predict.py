"""Prediction with a trained model: whole videos and labeled frames, plus their metrics.

This is the per-video kernel; :mod:`lpray.track.corpus` runs it over corpora as Ray tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lpray.data.labeled import LabeledDataset, LabeledFrames
from lpray.io.storage import atomic_write
from lpray.io.tables import arrays_to_table, write_pose_csv, write_pose_parquet
from lpray.metrics import pixel_error, summarize_errors, temporal_norm
from lpray.train.module import PoseModule, map_points


@dataclass
class TrainedModel:
    """A trained network ready for inference.

    ``compile``: run the network through ``torch.compile`` (CUDA). Compiling takes a minute or
    so once per process and shape, then inference runs faster (DESIGN.md section 8): worth it
    for long videos and corpora, not for one short clip.

    ``precision``: "auto" runs the network in bf16 autocast on a GPU and in float32 on a CPU;
    "bf16" uses bf16 autocast on a CPU too (mirror-mouse video, ResNet-18 128x128, 2 cores: 116 vs
    86 frames/s; keypoints a median 0.04 px from float32's, 1% over 1.4 px: frames whose
    heatmaps have two modes can flip; labeled-frame error unchanged), "fp32" never autocasts.
    """

    module: PoseModule
    model_dir: Path
    device: torch.device
    compile: bool = False
    precision: str = "auto"
    _forward: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    def forward_sequence(self, frames: torch.Tensor) -> torch.Tensor:
        """Heatmaps of a chunk of consecutive frames (the compiled network when ``compile``)."""
        if self._forward is None:
            forward = self.module.model.forward_sequence
            self._forward = torch.compile(forward, dynamic=False) if self.compile else forward
        return self._forward(frames)

    @property
    def keypoint_names(self) -> list[str]:
        return self.module.keypoint_names

    @property
    def context(self) -> int:
        return self.module.model.context


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_trained(
    model_dir: str | Path,
    device: str | torch.device | None = None,
    checkpoint: str = "best",
    compile: bool = False,
    precision: str = "auto",
) -> TrainedModel:
    """Load ``MODEL_DIR/checkpoints/{checkpoint}.ckpt`` for inference (see :class:`TrainedModel`
    for ``compile`` and ``precision``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model_dir = Path(model_dir)
    path = model_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not path.exists():
        fallback = model_dir / "checkpoints" / "last.ckpt"
        if not fallback.exists():
            raise FileNotFoundError(
                f"{model_dir}: no checkpoints/{checkpoint}.ckpt (is it a model directory?)"
            )
        path = fallback
    device = torch.device(device) if device is not None else default_device()
    module = PoseModule.load_from_checkpoint(str(path), map_location=device, weights_only=False)
    module.eval().to(device)
    # NHWC convolutions run ~2x faster on GPU tensor cores in bf16 (bench/predict.py), and on
    # CPU oneDNN's are faster too (ResNet-18 128x128, 2 cores: 97 vs 80 img/s, same outputs).
    module = module.to(memory_format=torch.channels_last)
    return TrainedModel(module, model_dir, device, compile=compile, precision=precision)


PRECISIONS = ("auto", "bf16", "fp32")


def _autocast(trained: TrainedModel):  # noqa: ANN202 - context manager
    """bf16 autocast on a GPU unless "fp32"; on a CPU only with "bf16"."""
    device = trained.device
    bf16 = trained.precision == "bf16" or (trained.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.inference_mode()
def predict_video_arrays(
    trained: TrainedModel,
    video: str,
    chunk_size: int = 64,
    backend: str = "auto",
    decoders: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (T, K, 2) in frame pixels and confidences (T, K) for every frame of ``video``.

    ``decoders``: parallel DALI pipelines (see :func:`lpray.data.unlabeled.iter_prediction_chunks`).
    """
    from lpray.data.unlabeled import iter_prediction_chunks

    module = trained.module
    xy_parts, conf_parts, index_parts = [], [], []
    # Nothing in this loop reads from the GPU: results stay on the device until the end, so the
    # host keeps queueing chunks while the network runs (a read-back per chunk would make the
    # host wait for each chunk's network pass before fetching the next decoded block).
    for chunk in iter_prediction_chunks(
        video,
        module.image_size,
        chunk_size=chunk_size,
        context=trained.context,
        backend=backend,
        device=trained.device.type,
        decoders=decoders,
    ):
        frames = chunk["frames"].to(trained.device, non_blocking=True)
        frames = frames.contiguous(memory_format=torch.channels_last)
        with _autocast(trained):
            heatmaps = trained.forward_sequence(frames)
        first, stop = chunk["valid_rows"]
        xy, confidence = module.heatmaps_to_image_coords(heatmaps[first:stop])
        to_frame = chunk["to_frame"].to(xy.device).float()
        xy_parts.append(map_points(to_frame[None].expand(xy.shape[0], 2, 3), xy))
        conf_parts.append(confidence)
        index_parts.append(chunk["valid_frames"])
    order = np.concatenate(index_parts)
    if not np.array_equal(order, np.arange(len(order))):
        raise RuntimeError(f"{video}: prediction chunks did not cover frames in order")
    return torch.cat(xy_parts).cpu().numpy(), torch.cat(conf_parts).cpu().numpy()


def video_metrics(trained: TrainedModel, xy: np.ndarray) -> pd.DataFrame:
    """Per-frame, per-keypoint temporal norm and PCA reprojection errors."""
    names = trained.keypoint_names
    columns = {f"temporal_norm|{n}": v for n, v in zip(names, temporal_norm(xy).T)}
    with torch.no_grad():
        errors = trained.module.pca_errors(torch.as_tensor(xy, dtype=torch.float32))
    for loss_name, values in errors.items():
        pca = trained.module.pcas[loss_name]
        for k, v in zip(pca.keypoint_indices, values.numpy().T):
            columns[f"{loss_name}|{names[k]}"] = v
    return pd.DataFrame(columns)


def predict_video(
    trained: TrainedModel,
    video: str,
    out_dir: str | Path,
    backend: str = "auto",
    chunk_size: int = 64,
) -> dict[str, float]:
    """Predict every frame; write ``<stem>.csv``, ``<stem>.parquet``, ``<stem>.metrics.csv``."""
    started = time.perf_counter()
    xy, confidence = predict_video_arrays(trained, video, chunk_size, backend)
    seconds = time.perf_counter() - started
    stem = Path(video).name.rsplit(".", 1)[0]
    out_dir = Path(out_dir)
    table = arrays_to_table(xy, trained.keypoint_names, confidence, scorer="lpray")
    write_pose_csv(table, out_dir / f"{stem}.csv")
    write_pose_parquet(table, out_dir / f"{stem}.parquet")
    metrics = video_metrics(trained, xy)
    with atomic_write(out_dir / f"{stem}.metrics.csv", "w") as handle:
        metrics.to_csv(handle, index_label="frame")
    return {
        "frames": len(xy),
        "seconds": seconds,
        "frames_per_second": len(xy) / seconds,
        "mean_confidence": float(np.nanmean(confidence)),
    }


@dataclass
class LabeledResult:
    frames: LabeledFrames
    predicted: np.ndarray  # (N, K, 2) frame pixels
    confidence: np.ndarray  # (N, K)
    errors: np.ndarray  # (N, K) pixel error, NaN where unlabeled

    @property
    def mean_error(self) -> float:
        return summarize_errors(self.errors, self.frames.keypoint_names)[0]

    @property
    def per_keypoint(self) -> dict[str, float]:
        return summarize_errors(self.errors, self.frames.keypoint_names)[1]

    def save(self, out_dir: str | Path, prefix: str = "labeled") -> None:
        out_dir = Path(out_dir)
        names = self.frames.keypoint_names
        table = arrays_to_table(self.predicted, names, self.confidence, self.frames.image_paths)
        write_pose_csv(table, out_dir / f"{prefix}_predictions.csv")
        errors = pd.DataFrame(self.errors, columns=names, index=self.frames.image_paths)
        with atomic_write(out_dir / f"{prefix}_errors.csv", "w") as handle:
            errors.to_csv(handle, index_label="image")
        from lpray.report.figures import labels_vs_predictions

        labels_vs_predictions(self, out_dir / "labels_vs_predictions.png")


@torch.inference_mode()
def evaluate_labeled(
    trained: TrainedModel, frames: LabeledFrames, batch_size: int = 32
) -> LabeledResult:
    """Predict labeled frames (no augmentation) and measure the pixel error against the labels."""
    dataset = LabeledDataset(frames, trained.module.image_size, None, trained.context)
    module = trained.module
    predicted, confidence = [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([item["image"] for item in items]).to(trained.device)
        to_frame = torch.stack([item["to_frame"] for item in items]).to(trained.device)
        with _autocast(trained):
            heatmaps = module.model(images)["heatmaps"]
        xy, conf = module.heatmaps_to_image_coords(heatmaps)
        predicted.append(map_points(to_frame, xy).cpu().numpy())
        confidence.append(conf.cpu().numpy())
    xy = np.concatenate(predicted)
    return LabeledResult(frames, xy, np.concatenate(confidence), pixel_error(xy, frames.keypoints))
