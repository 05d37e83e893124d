"""A trained pose network for inference: a plain ``nn.Module`` loaded from a model directory.

No Lightning and no training code is imported here: prediction and tracking workers load the
checkpoint's weights into the same :mod:`lpray.models.heatmap` network the LightningModule
trains (:class:`lpray.train.module.PoseModule` holds it as ``.model``) and decode heatmaps with
:func:`lpray.inference.decode.decode_heatmaps`. Importing ``pytorch_lightning`` costs ~9 s on the
GPU machine (DESIGN.md section 8), more than a short video's whole prediction.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lpray.config import Config, config_from_dict
from lpray.inference.decode import decode_heatmaps
from lpray.io.layout import ModelDir
from lpray.losses.registry import states_from_dict
from lpray.models.coordinates import heatmap_to_image
from lpray.models.fold import fold_batchnorm
from lpray.models.heatmap import build_model
from lpray.options import PRECISIONS

# The LightningModule keeps the network as ``self.model``: its state-dict keys carry this prefix.
_STATE_PREFIX = "model."


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def map_points(to_frame: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply (B, 2, 3) affines to points (B, ..., K, 2)."""
    shape = points.shape
    flat = points.reshape(shape[0], -1, 2)
    mapped = flat @ to_frame[:, :, :2].transpose(1, 2) + to_frame[:, None, :, 2]
    return mapped.reshape(shape)


@dataclass
class PoseNetwork:
    """A trained network with what prediction needs to know about it.

    Attributes:
        model: the heatmap network (eval mode, channels_last, on ``device``).
        config: the run config it was trained with.
        keypoint_names: one name per output map.
        loss_states: the losses' fitted states by loss name (the PCAs; the per-frame metrics).
        device: where it runs.
        precision: "auto" (bf16 autocast on a GPU, float32 on a CPU), "bf16" (on a CPU too:
            mirror-mouse video, ResNet-18 128x128, 2 cores: 116 vs 86 frames/s; keypoints a
            median 0.04 px from float32's) or "fp32".
        compile: run network + decoding through ``torch.compile`` (CUDA: about a minute once
            per process and shape, then faster; worth it for corpora, not for one short clip).
        model_dir: where it was loaded from.
    """

    model: nn.Module
    config: Config
    keypoint_names: list[str]
    loss_states: dict[str, Any]
    device: torch.device
    precision: str = "auto"
    compile: bool = False
    model_dir: Path | None = None
    _predict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = field(
        default=None, repr=False
    )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.config.data.image_size)

    @property
    def context(self) -> int:
        """Frames of context each side the network needs (2 for the context model)."""
        return self.model.context

    def autocast(self) -> contextlib.AbstractContextManager:
        bf16 = self.precision == "bf16" or (self.precision == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def heatmaps_to_keypoints(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmaps (N, K, h, w) -> keypoints (N, K, 2) in model-input pixels, confidence (N, K)."""
        coords, confidence = decode_heatmaps(heatmaps, self.config.model.softmax_temperature)
        return heatmap_to_image(coords, self.image_size, tuple(heatmaps.shape[-2:])), confidence

    def _sequence(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            heatmaps = self.model.forward_sequence(frames)
        return self.heatmaps_to_keypoints(heatmaps)

    @torch.inference_mode()
    def predict_sequence(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Contiguous normalised frames (S, 3, H, W) on ``device`` -> model-input keypoints
        (S, K, 2) and confidences (S, K), float32, still on the device.

        The context model pads the sequence's ends with repeats; callers with real neighbours
        pass them in and drop the ends.
        """
        if self._predict is None:
            if self.compile:
                compile_shared([self])
            else:
                self._predict = self._sequence
        return self._predict(frames.contiguous(memory_format=torch.channels_last))

    @torch.inference_mode()
    def predict_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labeled-style input (N, C, 3, H, W) (C = 2 context + 1) -> keypoints, confidences."""
        with self.autocast():
            heatmaps = self.model(frames)["heatmaps"]
        return self.heatmaps_to_keypoints(heatmaps)


class _SequenceForward(nn.Module):
    """``model.forward_sequence`` as a module's ``forward`` (what ``functional_call`` calls)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.forward_sequence(frames)


def _architecture(network: PoseNetwork) -> tuple:
    """What one compiled graph is specialised on: members equal in it share the graph."""
    state = itertools.chain(network.model.named_parameters(), network.model.named_buffers())
    return (
        type(network.model),
        network.image_size,
        network.config.model.softmax_temperature,
        network.precision,
        str(network.device),
        tuple((name, tuple(t.shape), t.dtype) for name, t in state),
    )


def compile_shared(networks: Sequence[PoseNetwork], backend: str = "inductor") -> int:
    """``torch.compile`` network + decoding ONCE for all members of one architecture.

    The compiled function takes a member's weights as inputs (``torch.func.functional_call``),
    so the K members of an ensemble reuse one graph: compiling each member on its own traced and
    compiled the same network K times (``--compile`` on 5 members: 543 video-frames/s on the
    396x406 corpus where eager ran 963, one H200). Called lazily by
    :meth:`PoseNetwork.predict_sequence` for a network with ``compile=True``.

    Args:
        networks: the members.
        backend: ``torch.compile``'s backend ("eager" traces without generating code: tests).

    Returns:
        The number of graphs (architectures) among ``networks``.
    """
    groups: dict[tuple, list[PoseNetwork]] = {}
    for network in networks:
        groups.setdefault(_architecture(network), []).append(network)
    for members in groups.values():
        template = members[0]
        # a copy: with a member's own tensors in the module, dynamo guards on the state aliasing
        # them and recompiles for every other member
        forward = _SequenceForward(copy.deepcopy(template.model))

        def run(
            state: dict[str, torch.Tensor],
            frames: torch.Tensor,
            template: PoseNetwork = template,
            forward: nn.Module = forward,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            with template.autocast():
                heatmaps = torch.func.functional_call(forward, state, (frames,))
            return template.heatmaps_to_keypoints(heatmaps)

        compiled = torch.compile(run, dynamic=False, backend=backend)
        for network in members:
            named = itertools.chain(network.model.named_parameters(), network.model.named_buffers())
            state = {f"model.{name}": tensor for name, tensor in named}
            network._predict = functools.partial(compiled, state)
    return len(groups)


def checkpoint_path(model_dir: Path, checkpoint: str = "best") -> Path:
    """``MODEL_DIR/checkpoints/{checkpoint}.ckpt``, else ``last.ckpt``."""
    paths = ModelDir(model_dir)
    path = paths.checkpoint(checkpoint)
    if path.exists():
        return path
    fallback = paths.last_checkpoint
    if fallback.exists():
        return fallback
    raise FileNotFoundError(
        f"{model_dir}: no checkpoints/{checkpoint}.ckpt (is it a model directory written by "
        "`lpray train`?)"
    )


def _build(config: Config, n_keypoints: int) -> nn.Module:
    """The architecture ``config`` names, randomly initialised (never ImageNet weights: a
    checkpoint's weights replace them)."""
    return build_model(config.model.model_type, config.model.backbone, n_keypoints, False)


def _for_inference(model: nn.Module, device: torch.device, fold: bool) -> nn.Module:
    model.eval()
    if fold:
        model.lpray_folded = fold_batchnorm(model)
    # NHWC convolutions run ~2x faster on GPU tensor cores in bf16 (bench/predict.py), and on
    # CPU oneDNN's are faster too (ResNet-18 128x128, 2 cores: 97 vs 80 img/s, same outputs).
    return model.to(device=device, memory_format=torch.channels_last)


def network_from_checkpoint(
    checkpoint: dict[str, Any],
    device: torch.device,
    precision: str = "auto",
    compile: bool = False,
    model_dir: Path | None = None,
    fold: bool | None = None,
) -> PoseNetwork:
    """Build the network a Lightning checkpoint dict describes and load its weights
    (``fold``: BatchNorm folded into the convolutions, see :func:`load_network`)."""
    hyper = checkpoint["hyper_parameters"]
    config = config_from_dict(hyper["config"])
    names = list(hyper["keypoint_names"])
    # built without storage and then given the checkpoint's tensors: a random initialisation
    # that the weights replace costs ~0.3 s of CPU per ResNet-50 member
    with torch.device("meta"):
        model = _build(config, len(names))
    state = {
        key[len(_STATE_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(_STATE_PREFIX)
    }
    model.load_state_dict(state, assign=True)
    model = _for_inference(model, device, compile if fold is None else fold)
    states = states_from_dict(checkpoint.get("lpray_pcas", {}))  # key: PoseModule's checkpoint
    return PoseNetwork(model, config, names, states, device, precision, compile, model_dir)


def load_network(
    model_dir: str | Path,
    device: str | torch.device | None = None,
    checkpoint: str = "best",
    precision: str = "auto",
    compile: bool = False,
    fold: bool | None = None,
) -> PoseNetwork:
    """Load ``MODEL_DIR/checkpoints/{checkpoint}.ckpt`` (else ``last.ckpt``) for inference.

    Args:
        model_dir: a model directory written by ``lpray train``.
        device: "cpu", "cuda", "cuda:N" (default: CUDA when present).
        checkpoint: "best" or "last".
        precision: see :class:`PoseNetwork`.
        compile: see :class:`PoseNetwork`.
        fold: fold each BatchNorm into the convolution before it (:mod:`lpray.models.fold`;
            the same function to float rounding). None: when compiling. ResNet-50 256, bf16,
            chunk 128, one H200 (bench/results/network_gpu.json): compiled 13,955 img/s folded
            vs 12,750 unfolded; eager 8,041 vs 9,033 (eager's convolution + bias ran slower than
            the convolution + BatchNorm kernels it replaced).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model_dir = Path(model_dir)
    device = torch.device(device) if device is not None else default_device()
    path = checkpoint_path(model_dir, checkpoint)
    # lpray's own checkpoints hold tensors, dicts and numbers only: the safe loader reads them
    state = torch.load(path, map_location=device, weights_only=True)
    return network_from_checkpoint(state, device, precision, compile, model_dir, fold)


def random_network(
    config: Config,
    keypoint_names: list[str],
    device: str | torch.device | None = None,
    precision: str = "auto",
    compile: bool = False,
    fold: bool | None = None,
) -> PoseNetwork:
    """A randomly initialised network of ``config``'s architecture (benchmarks, tests)."""
    device = torch.device(device) if device is not None else default_device()
    fold = compile if fold is None else fold
    model = _for_inference(_build(config, len(keypoint_names)), device, fold)
    return PoseNetwork(model, config, list(keypoint_names), {}, device, precision, compile)


def save_checkpoint(network: PoseNetwork, path: str | Path) -> None:
    """Write ``network`` as a checkpoint :func:`load_network` reads (the keys a Lightning
    checkpoint of :class:`lpray.train.module.PoseModule` has, weights only).

    Raises:
        ValueError: the network's BatchNorms were folded (``fold=True``): its state dict no
            longer fits the training architecture.
    """
    if getattr(network.model, "lpray_folded", 0):
        raise ValueError("cannot save a network with folded BatchNorms: load it with fold=False")
    state = {f"{_STATE_PREFIX}{k}": v.cpu() for k, v in network.model.state_dict().items()}
    torch.save(
        {
            "state_dict": state,
            "hyper_parameters": {
                "config": network.config.to_dict(),
                "keypoint_names": list(network.keypoint_names),
            },
            "lpray_pcas": {n: state.to_dict() for n, state in network.loss_states.items()},
        },
        path,
    )
