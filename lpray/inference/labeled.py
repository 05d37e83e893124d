"""Prediction on labeled frames and the pixel error against the labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lpray.data.labeled import LabeledDataset, LabeledFrames
from lpray.inference.network import PoseNetwork, map_points
from lpray.io.storage import atomic_write
from lpray.io.tables import arrays_to_table, write_pose_csv
from lpray.metrics import pixel_error, summarize_errors


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
        """``<prefix>_predictions.csv``, ``<prefix>_errors.csv`` and a labels-vs-predictions
        figure."""
        from lpray.viz.figures import labels_vs_predictions  # noqa: PLC0415 - matplotlib

        out_dir = Path(out_dir)
        names = self.frames.keypoint_names
        table = arrays_to_table(self.predicted, names, self.confidence, self.frames.image_paths)
        write_pose_csv(table, out_dir / f"{prefix}_predictions.csv")
        errors = pd.DataFrame(self.errors, columns=names, index=self.frames.image_paths)
        with atomic_write(out_dir / f"{prefix}_errors.csv", "w") as handle:
            errors.to_csv(handle, index_label="image")
        labels_vs_predictions(self, out_dir / "labels_vs_predictions.png")


@torch.inference_mode()
def evaluate_labeled(
    network: PoseNetwork, frames: LabeledFrames, batch_size: int = 32
) -> LabeledResult:
    """Predict labeled frames (no augmentation) and measure the pixel error against the labels."""
    dataset = LabeledDataset(frames, network.image_size, None, network.context)
    predicted, confidence = [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([item["image"] for item in items]).to(network.device)
        to_frame = torch.stack([item["to_frame"] for item in items]).to(network.device)
        xy, conf = network.predict_frames(images)
        predicted.append(map_points(to_frame.float(), xy).cpu().numpy())
        confidence.append(conf.cpu().numpy())
    xy = np.concatenate(predicted)
    return LabeledResult(frames, xy, np.concatenate(confidence), pixel_error(xy, frames.keypoints))
