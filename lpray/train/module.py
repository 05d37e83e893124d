"""The LightningModule: supervised heatmap loss on labeled frames plus unsupervised losses on video.

One training step sees a labeled batch (frames with keypoints) and, when any unsupervised loss is
on, a batch of unlabeled contiguous video sequences. Predictions on the unlabeled frames are mapped
back to FRAME pixels (undoing resize and augmentation with the batch's ``to_frame`` affine) before
the unsupervised losses (every loss of :mod:`lpray.losses.registry` switched on and, where it
fits a state such as a PCA, fitted), so every loss, its epsilon and its state live in one
coordinate space: the video's own pixels.
"""

from __future__ import annotations

import gc
import inspect
import warnings
from typing import Any

import pytorch_lightning as pl
import torch

from lpray.config import Config, config_from_dict
from lpray.data.augment import apply_deferred_augmentation
from lpray.losses.registry import active_weights, get_loss, states_from_dict
from lpray.losses.supervised import gaussian_heatmaps, heatmap_kl, heatmap_mse
from lpray.losses.unsupervised import anneal_weight, combine_losses
from lpray.models.coordinates import heatmap_to_image, image_to_heatmap, soft_argmax
from lpray.models.heatmap import build_model


def map_points(to_frame: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply (B, 2, 3) affines to points (B, ..., K, 2)."""
    shape = points.shape
    flat = points.reshape(shape[0], -1, 2)
    mapped = flat @ to_frame[:, :, :2].transpose(1, 2) + to_frame[:, None, :, 2]
    return mapped.reshape(shape)


def _to(state: Any, device: torch.device) -> Any:
    """A fitted loss state on ``device`` (states without tensors have no ``to``)."""
    return state.to(device) if hasattr(state, "to") else state


class _Forward(torch.nn.Module):
    """A module that calls ``backbone``: what gets CUDA-graphed, leaving the backbone itself (and
    its eager forward for other shapes and for evaluation) untouched."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.backbone(frames)


class PoseModule(pl.LightningModule):
    """Heatmap pose network + its losses, configured by a :class:`lpray.config.Config`."""

    def __init__(
        self,
        config: dict[str, Any],
        keypoint_names: list[str],
        loss_states: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config, "keypoint_names": keypoint_names})
        self.cfg: Config = config_from_dict(config)
        self.keypoint_names = list(keypoint_names)
        self.model = build_model(
            self.cfg.model.model_type,
            self.cfg.model.backbone,
            len(keypoint_names),
            self.cfg.model.pretrained,
        )
        self.image_size = tuple(self.cfg.data.image_size)
        # the losses' fitted states by loss name (the PCAs), from lpray.train.data.fit_loss_states
        self.loss_states: dict[str, Any] = dict(loss_states or {})
        self.unsupervised_weights = active_weights(self.cfg.losses.active(), self.loss_states)
        self._val_error_sum = 0.0
        self._val_error_count = 0

    def on_fit_start(self) -> None:
        self.loss_states = {
            name: _to(state, self.device) for name, state in self.loss_states.items()
        }

    def on_train_start(self) -> None:
        # Before the first batch: no loader or decoder thread issues CUDA calls during capture.
        self.__dict__["_graphed_backbone"] = None  # not a submodule: no state_dict entries
        if self.cfg.training.cuda_graphs:
            self.__dict__["_graphed_backbone"] = self._capture_backbone()

    def _capture_backbone(self) -> tuple[tuple[int, ...], torch.nn.Module] | None:
        """The backbone's training forward + backward as CUDA graphs, for the step's input shape
        (labeled frames, then unlabeled ones); other shapes, eval mode and CPU run eagerly."""
        t = self.cfg.training
        problems = {
            "needs a CUDA device": self.device.type != "cuda",
            "needs one process (no DDP)": self.trainer.world_size > 1,
            "does not combine with training.compile": t.compile,
            "needs an unfrozen backbone (unfreeze_epoch 0)": t.unfreeze_epoch > 0,
        }
        why = [text for text, found in problems.items() if found]
        if why:
            warnings.warn(f"training.cuda_graphs ignored: it {why[0]}", stacklevel=2)
            return None
        frames = t.batch_size * (2 * self.model.context + 1)
        if self.unsupervised_weights:
            frames += t.unlabeled_sequences * t.sequence_length
        shape = (frames, 3, *self.image_size)
        wrapper = _Forward(self.model.backbone).train()
        saved = [b.detach().clone() for b in self.model.backbone.buffers()]
        half = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(t.precision)
        options = {}
        if "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters:
            options["capture_error_mode"] = "thread_local"  # other threads may use CUDA meanwhile
        gc.collect()
        gc.disable()  # no finaliser (a CUDA free, a stream destroyed) runs during the capture
        try:
            with (
                torch.enable_grad(),
                torch.autocast(
                    "cuda",
                    dtype=half or torch.float32,
                    enabled=half is not None,
                    cache_enabled=False,
                ),
            ):
                sample = torch.randn(shape, device=self.device)
                torch.cuda.make_graphed_callables(wrapper, (sample,), **options)
        except Exception as error:  # noqa: BLE001 - a failed capture leaves the eager step
            warnings.warn(
                f"training.cuda_graphs: capture failed, eager backbone ({error})", stacklevel=2
            )
            return None
        finally:
            gc.enable()
            with torch.no_grad():  # undo the capture's warm-up passes on BatchNorm statistics
                for buffer, value in zip(self.model.backbone.buffers(), saved):
                    buffer.copy_(value)
        return shape, wrapper

    def backbone_features(self, frames: torch.Tensor) -> torch.Tensor:
        """The backbone on a training step's frames: the CUDA graphs when captured and the shape
        matches, else eager."""
        graphed = self.__dict__.get("_graphed_backbone")
        if graphed is not None and self.training and tuple(frames.shape) == graphed[0]:
            return graphed[1](frames)
        return self.model.backbone(frames)

    # -- checkpoint: the fitted loss states travel with the weights ----------------------------
    # Under "lpray_pcas": the PCAs were the first states, and checkpoints already written (and
    # lpray.inference.network, lpray.select.scoring) read that key.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lpray_pcas"] = {n: state.to_dict() for n, state in self.loss_states.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.loss_states = states_from_dict(checkpoint.get("lpray_pcas", {}))

    # -- prediction ----------------------------------------------------------------------------
    def heatmaps_to_image_coords(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmaps (N, K, h, w) -> keypoints (N, K, 2) in model-input pixels, confidence (N, K)."""
        coords, confidence = soft_argmax(heatmaps.float(), self.cfg.model.softmax_temperature)
        xy = heatmap_to_image(coords, self.image_size, tuple(heatmaps.shape[-2:]))
        return xy, confidence.clamp(0.0, 1.0)  # a softmax mass; float rounding can pass 1

    def predict_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labeled-style input (N, C, 3, H, W) -> model-input keypoints (N, K, 2), confidence."""
        return self.heatmaps_to_image_coords(self.model(frames)["heatmaps"])

    # -- losses --------------------------------------------------------------------------------
    def supervised_loss(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        outputs = self.model(batch["image"]) if outputs is None else outputs
        heat_size = tuple(outputs["heatmaps"].shape[-2:])
        target_xy = image_to_heatmap(batch["keypoints"], self.image_size, heat_size)
        targets, valid = gaussian_heatmaps(target_xy, heat_size, self.cfg.model.heatmap_sigma)
        heads = [outputs["heatmaps"]]
        if "heatmaps_single" in outputs:  # context model: supervise the single-frame head too
            heads.append(outputs["heatmaps_single"])
        if self.cfg.losses.heatmap_loss == "kl":
            temperature = self.cfg.model.softmax_temperature
            return sum(heatmap_kl(h.float(), targets, valid, temperature) for h in heads)
        return sum(heatmap_mse(h.float(), targets, valid) for h in heads)

    def unlabeled_keypoints(
        self, batch: dict[str, torch.Tensor], features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features of the unlabeled sequences (B*S, ...) -> frame-pixel keypoints
        (B, S, K, 2) and confidences (B, S, K). Each sequence gets its own context window."""
        b, s = batch["frames"].shape[:2]
        per_sequence = features.view(b, s, *features.shape[1:])
        heatmaps = torch.cat([self.model.sequence_heads(f) for f in per_sequence])
        xy, confidence = self.heatmaps_to_image_coords(heatmaps)
        xy = map_points(batch["to_frame"].float(), xy.view(b, s, -1, 2))
        return xy, confidence.view(b, s, -1)

    def unsupervised_losses(
        self, batch: dict[str, torch.Tensor], features: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        xy, confidence = self.unlabeled_keypoints(batch, features)
        return {
            name: get_loss(name).loss(
                xy, confidence, getattr(self.cfg.losses, name), self.loss_states.get(name)
            )
            for name in self.unsupervised_weights
        }

    # -- Lightning hooks -----------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Labeled frames whose augmentation was deferred (``raw``) are warped here, on the device
        the batch now lives on, a whole batch at once."""
        labeled = batch["labeled"] if isinstance(batch, dict) and "labeled" in batch else batch
        if isinstance(labeled, dict):
            apply_deferred_augmentation(labeled, self.image_size)
        return batch

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.cfg.training.unfreeze_epoch
        for param in self.model.backbone.parameters():
            param.requires_grad_(not frozen)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        labeled = batch["labeled"] if "labeled" in batch else batch
        unlabeled = batch.get("unlabeled") if self.unsupervised_weights else None
        images = labeled["image"]
        n = images.shape[0]
        # One backbone pass over labeled and unlabeled frames: BatchNorm normalises with (and its
        # running statistics track) the mixed batch. Two separate passes let the near-identical
        # frames of one video clip dominate the statistics, and measured on the synthetic set
        # that made every unsupervised weight hurt. The pass goes through backbone_features, so
        # training.cuda_graphs serves supervised-only runs too.
        frames = images.flatten(0, 1)
        if unlabeled is not None:
            frames = torch.cat([frames, unlabeled["frames"].to(images.dtype).flatten(0, 1)])
        features = self.backbone_features(frames)
        labeled_count = images.shape[0] * images.shape[1]
        outputs = self.model.labeled_heads(features[:labeled_count], n)
        supervised = self.supervised_loss(labeled, outputs)
        unsupervised = {}
        if unlabeled is not None:
            unsupervised = self.unsupervised_losses(unlabeled, features[labeled_count:])
        epoch = self.current_epoch + batch_idx / max(1, self.trainer.num_training_batches)
        anneal = anneal_weight(epoch, self.cfg.losses.anneal_rate)
        total, logged = combine_losses(
            supervised,
            unsupervised,
            self.unsupervised_weights,
            self.cfg.losses.supervised_weight,
            anneal,
        )
        if self._writes_logs_this_step():
            self._log_step(total, logged, anneal, batch_size=n)
        return total

    def _writes_logs_this_step(self) -> bool:
        """Whether Lightning writes the step's logs (every ``log_every_n_steps`` optimizer steps).

        Logging only then is the same output: on the other steps ``self.log`` only costs host
        time (measured on one H100 as a visible share of an eager step, bench/README.md).
        """
        every = self.trainer.log_every_n_steps
        return every > 0 and (
            (self.trainer.global_step + 1) % every == 0 or self.trainer.should_stop
        )

    def _log_step(
        self, total: torch.Tensor, logged: dict[str, torch.Tensor], anneal: float, batch_size: int
    ) -> None:
        # Tensors, not floats: Lightning reads them back only when it writes the log, so the
        # step never waits for the GPU (a float() here is a device sync per loss per step).
        self.log_dict(
            {f"train/{k}": v for k, v in logged.items()},  # already detached
            batch_size=batch_size,
        )
        # A float would become a device tensor through a blocking copy (a sync); fill one instead.
        self.log("train/anneal", torch.full((), anneal, device=total.device), batch_size=batch_size)
        # The mean over ranks (an all-reduce) only where there are several ranks.
        self.log(
            "train_loss",
            total.detach(),
            prog_bar=True,
            batch_size=batch_size,
            sync_dist=self.trainer.world_size > 1,
        )

    def on_validation_epoch_start(self) -> None:
        self._val_error_sum, self._val_error_count = 0.0, 0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        xy, _ = self.predict_frames(batch["image"])
        frame_xy = map_points(batch["to_frame"].float(), xy)
        error = torch.linalg.norm(frame_xy - batch["keypoints_frame"], dim=-1)
        keep = ~torch.isnan(error)
        self._val_error_sum += float(error[keep].sum())
        self._val_error_count += int(keep.sum())

    def on_validation_epoch_end(self) -> None:
        totals = torch.tensor(
            [self._val_error_sum, float(self._val_error_count)], device=self.device
        )
        if self.trainer.world_size > 1:  # every rank saw a different part of the val split
            totals = self.all_gather(totals).sum(0)
        mean = totals[0] / totals[1].clamp(min=1)
        self.log("val_pixel_error", mean, prog_bar=True, rank_zero_only=False)

    def configure_optimizers(self) -> Any:
        t = self.cfg.training
        # fused: one kernel for the whole update on a GPU (the per-tensor loop cost 4-8 ms of host
        # time a step on one H100, bench/profile_train.py)
        fused = next(self.parameters()).is_cuda
        optimizer = torch.optim.Adam(
            self.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=fused or None
        )
        # Lightning Pose halves the rate at epochs 150/200/250 of 300; keep those fractions.
        milestones = sorted({max(1, int(t.max_epochs * f)) for f in (0.5, 2 / 3, 5 / 6)})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.5)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
