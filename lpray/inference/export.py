"""A trained network as an ONNX model: ``lpray export MODEL_DIR``.

The exported graph is what :meth:`~lpray.inference.network.PoseNetwork.predict_sequence` computes
in float32: contiguous frames in, keypoints and confidences out, the soft-argmax decoding
included, so any ONNX runtime (onnxruntime on a CPU, TensorRT, a browser) gets lpray's keypoints
without PyTorch. A JSON file beside it says how to feed it (input size, normalisation, context
frames) and names the keypoints.

Input ``frames``: float32 ``(S, 3, H, W)``, RGB resized to the model's input size (H, W), scaled
to [0, 1] and normalised with the ImageNet mean and std, S >= 1 contiguous frames of one video
(the context model mixes each frame with its 2 neighbours on each side and repeats the ends).
Outputs ``keypoints`` ``(S, K, 2)`` (x, y) in input pixels and ``confidence`` ``(S, K)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lpray.data.normalise import IMAGENET_MEAN, IMAGENET_STD
from lpray.errors import UserError
from lpray.inference.network import PoseNetwork
from lpray.models.coordinates import bicubic_matrix

log = logging.getLogger(__name__)

# ONNX opset the exporter targets (onnxruntime >= 1.18 runs it)
OPSET = 18


class ExportError(UserError):
    """The ONNX exporter is missing or cannot export this network."""


class _Keypoints(nn.Module):
    """``predict_sequence`` as a module: frames -> (keypoints, confidence)."""

    def __init__(self, network: PoseNetwork) -> None:
        super().__init__()
        self.network = network
        self.model = network.model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.heatmaps_to_keypoints(self.model.forward_sequence(frames))


def sidecar(network: PoseNetwork) -> dict[str, Any]:
    """What a consumer of the ONNX file needs to know, as written beside it."""
    height, width = network.image_size
    return {
        "format": "lpray-onnx-1",
        "input": {
            "name": "frames",
            "shape": ["S", 3, height, width],
            "dtype": "float32",
            "layout": "RGB, resized to (height, width), scaled to [0, 1], then (x - mean) / std",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "context_frames": network.context,
        },
        "outputs": {
            "keypoints": "(S, K, 2) x, y in input pixels",
            "confidence": "(S, K) softmax mass near the peak, 0..1",
        },
        "keypoint_names": list(network.keypoint_names),
        "model_type": network.config.model.model_type,
        "backbone": network.config.model.backbone,
        "opset": OPSET,
    }


def export_onnx(network: PoseNetwork, path: str | Path, example_frames: int = 8) -> Path:
    """Write ``network`` (float32, on the CPU) as an ONNX model with a dynamic frame count, and
    ``<path>.json`` beside it (:func:`sidecar`).

    Args:
        network: a network loaded with ``device="cpu", precision="fp32"``.
        path: the ``.onnx`` file to write (its folder is created).
        example_frames: frames of the example input the graph is traced with.

    Returns:
        The written path.

    Raises:
        ExportError: onnx / onnxscript are not installed, or the network is not on the CPU in
            float32.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ExportError(
            f"lpray export needs the ONNX exporter ({error.name} is missing): "
            "pip install 'lpray[export]'"
        ) from error
    if network.device.type != "cpu" or network.precision != "fp32":
        raise ExportError("export a network loaded with device='cpu', precision='fp32'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = network.image_size
    example = torch.randn(example_frames, 3, height, width)
    frames = torch.export.Dim("frames", min=1)
    partial = path.with_name(path.name + ".partial")
    try:
        torch.onnx.export(
            _Keypoints(network).eval(),
            (example,),
            str(partial),
            dynamo=True,
            opset_version=OPSET,
            input_names=["frames"],
            output_names=["keypoints", "confidence"],
            dynamic_shapes={"frames": {0: frames}},
            external_data=False,
            verbose=False,
        )
    finally:
        # the exporter runs the Python code on fake tensors: the decoding's cached upsampling
        # matrices would otherwise hold fake tensors for later calls
        bicubic_matrix.cache_clear()
    partial.replace(path)
    path.with_name(path.name + ".json").write_text(json.dumps(sidecar(network), indent=2) + "\n")
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path
