"""Labeled frames: the DLC ``CollectedData.csv`` reader, the seeded split and the torch dataset.

The CSV has three header rows (scorer, bodyparts, coords) and one row per labeled image; its
index column is the image path relative to the project folder; an empty cell is a missing
keypoint. Images may be greyscale or colour; the model always sees 3 channels.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from lpray.data.augment import augment_batch, draw, draws_as_tensors
from lpray.data.augment_spec import NO_AUGMENT, AugmentSpec
from lpray.data.geometry import apply_affine_points, invert_affine
from lpray.errors import UserError
from lpray.io.tables import PoseTableError, keypoint_names, read_pose_csv, table_to_arrays


class LabelError(UserError, ValueError):
    """A labeled-data problem; the message names the file and what is wrong."""


@dataclass
class LabeledFrames:
    """All labeled frames of a project: image paths and keypoints in frame pixels."""

    root: Path
    csv_path: Path
    image_paths: list[str]  # relative to root, as in the CSV
    keypoints: np.ndarray  # (N, K, 2) frame pixels, NaN = missing
    keypoint_names: list[str]

    def __len__(self) -> int:
        return len(self.image_paths)

    def subset(self, indices: np.ndarray | list[int]) -> LabeledFrames:
        indices = list(indices)
        return LabeledFrames(
            self.root,
            self.csv_path,
            [self.image_paths[i] for i in indices],
            self.keypoints[indices],
            self.keypoint_names,
        )


def read_labeled_frames(
    root: str | Path, csv_file: str = "CollectedData.csv", keypoints: list[str] | None = None
) -> LabeledFrames:
    """Read and check a project's labels.

    Raises:
        LabelError: bad header, unknown keypoint names, a keypoint missing in every frame,
            or a listed image that does not exist. Each message names the CSV.
    """
    root = Path(root)
    csv_path = root / csv_file
    try:
        table = read_pose_csv(csv_path)
    except PoseTableError as err:
        raise LabelError(str(err)) from err
    names = keypoint_names(table)
    xy, _ = table_to_arrays(table)
    if keypoints is not None:
        unknown = [k for k in keypoints if k not in names]
        if unknown:
            raise LabelError(f"{csv_path}: unknown keypoints {unknown}; the file has {names}")
        xy = xy[:, [names.index(k) for k in keypoints]]
        names = list(keypoints)
    if len(table) == 0:
        raise LabelError(f"{csv_path}: no labeled frames")
    empty = [n for k, n in enumerate(names) if np.isnan(xy[:, k]).all()]
    if empty:
        raise LabelError(
            f"{csv_path}: keypoint(s) {empty} missing in every frame; label them or leave them out "
            "with data.keypoints"
        )
    paths = [str(p) for p in table.index]
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        raise LabelError(
            f"{csv_path}: {len(missing)} labeled image(s) not found under {root}, e.g. {missing[0]}"
        )
    return LabeledFrames(root, csv_path, paths, xy, names)


@dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_frames(
    frames: LabeledFrames,
    train_prob: float,
    val_prob: float,
    seed: int,
    train_frames: int | float | None = None,
    split_file: str | Path | None = None,
) -> Split:
    """Seeded train/val/test split; ``train_frames`` then subsamples the train split.

    The subsample is drawn from the shuffled train split with the same seed, so the 75 frames of
    a ``train_frames=75`` run are the first 75 of a ``train_frames=150`` run: label-count sweeps
    then nest, as a lab adding labels would.
    """
    n = len(frames)
    if split_file is not None:
        listed = json.loads(Path(split_file).read_text())
        where = {p: i for i, p in enumerate(frames.image_paths)}
        parts = {}
        for name in ("train", "val", "test"):
            unknown = [p for p in listed.get(name, []) if p not in where]
            if unknown:
                raise LabelError(
                    f"{split_file}: {name} lists {unknown[0]}, not in {frames.csv_path}"
                )
            parts[name] = np.array([where[p] for p in listed.get(name, [])], dtype=int)
        train, val, test = parts["train"], parts["val"], parts["test"]
    else:
        order = np.random.default_rng(seed).permutation(n)
        n_train = max(1, int(round(train_prob * n)))
        n_val = int(round(val_prob * n)) if val_prob > 0 else 0
        if n_val == 0 and val_prob > 0 and n - n_train > 0:
            n_val = 1
        n_train = min(n_train, n - n_val) if n_val else n_train
        train, val, test = (
            order[:n_train],
            order[n_train : n_train + n_val],
            order[n_train + n_val :],
        )
    if train_frames is not None:
        count = (
            int(round(train_frames * len(train)))
            if isinstance(train_frames, float)
            else train_frames
        )
        if count > len(train):
            raise LabelError(
                f"data.train_frames={train_frames} asks for {count} labeled frames but the train "
                f"split of {frames.csv_path} has {len(train)}; lower data.train_frames (or give "
                "a fraction, e.g. 0.5) or label more frames"
            )
        shuffled = np.random.default_rng(seed + 1).permutation(train)
        train = np.sort(shuffled[: max(1, count)])
    return Split(np.asarray(train), np.asarray(val), np.asarray(test))


_FRAME_NUMBER = re.compile(r"^(?P<stem>.*?)(?P<num>\d+)(?P<ext>\.\w+)$")


def context_paths(path: str, offsets: range) -> list[str]:
    """Neighbour image names for a context model: ``img00000042.png`` -> ``img00000040.png``...

    Follows Lightning Pose's convention that labeled images are named by their frame number.
    """
    match = _FRAME_NUMBER.match(path)
    if match is None:
        return [path for _ in offsets]
    width = len(match["num"])
    num = int(match["num"])
    return [f"{match['stem']}{max(num + o, 0):0{width}d}{match['ext']}" for o in offsets]


def load_image(path: Path) -> torch.Tensor:
    """An image file as a (3, H, W) uint8 tensor (greyscale is repeated to 3 channels)."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise LabelError(f"{path}: cannot read image ({err})") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def check_images(frames: LabeledFrames, workers: int | None = None) -> None:
    """Decode every labeled image once, so a corrupt file stops a run before it writes anything.

    Raises:
        LabelError: naming the labels file and the first image that does not decode.
    """
    import concurrent.futures  # noqa: PLC0415

    def problem(relative: str) -> str | None:
        try:
            with Image.open(frames.root / relative) as img:
                img.convert("RGB")  # decodes the whole image (verify() only checks a header)
        except (OSError, ValueError, SyntaxError) as err:
            return f"{relative} ({err})"
        return None

    threads = workers or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        bad = [p for p in pool.map(problem, frames.image_paths) if p is not None]
    if bad:
        raise LabelError(
            f"{frames.csv_path}: {len(bad)} labeled image(s) do not decode, e.g. {bad[0]}; "
            "replace the file(s) (extract the frames again) or remove their rows"
        )


# Decoded labeled images a training dataset holds in memory up front (LabeledDataset.preload):
# 1,000 frames of 640x480 RGB are 0.9 GB.
PRELOAD_MAX_BYTES = 4 * 1024**3


class LabeledDataset(Dataset):
    """Labeled frames as model inputs with keypoints in model-input pixels.

    Each item: ``image`` (C, 3, H, W) normalised (C = 1, or 2*context + 1 neighbour frames),
    ``keypoints`` (K, 2) model-input pixels (NaN missing), ``keypoints_frame`` (K, 2) frame pixels,
    ``to_frame`` (2, 3) affine back to frame pixels, ``index`` in the LabeledFrames.
    Images are decoded once and kept in memory as uint8: labeled sets are small.

    ``defer_augment``: leave the warp and photometric changes to the device the batch goes to
    (:func:`lpray.data.augment.augment_batch`, applied by the training module after transfer).
    Items then carry ``raw`` (C, 3, H, W) uint8 frames and the draws (``to_model`` frame->model
    matrix, ``photometric``, ``blur_kernel``, ``occlusion``: :data:`lpray.data.augment.DRAW_KEYS`)
    instead of ``image``; the random draws are the same.
    On a GPU this moves the per-frame work out of the CPU loader workers (few CPUs per GPU on
    cloud nodes).

    ``length`` (>= the number of frames) makes one pass over the dataset visit every frame
    ``length / len(frames)`` times, each visit with its own augmentation draw: with 16 labels and
    batch 16 an epoch would otherwise be ONE step, and per-epoch work (validation, checkpoint)
    would dominate training.
    """

    def __init__(
        self,
        frames: LabeledFrames,
        image_size: tuple[int, int],
        augment: AugmentSpec | None = None,
        context: int = 0,
        seed: int = 0,
        length: int | None = None,
        defer_augment: bool = False,
    ) -> None:
        if length is not None and length < len(frames):
            raise ValueError(f"length {length} is below the {len(frames)} frames")
        self.frames = frames
        self.length = len(frames) if length is None else length
        self.image_size = tuple(image_size)
        self.augment = augment or NO_AUGMENT
        self.context = context
        self.seed = seed
        self.defer_augment = defer_augment
        self.epoch = 0  # for plain integer indices; an EpochSampler passes the epoch with each item
        self._cache: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.length

    def _names(self, index: int) -> list[str]:
        """The image files frame ``index`` is made of (itself, or its context window)."""
        relative = self.frames.image_paths[index]
        if not self.context:
            return [relative]
        return context_paths(relative, range(-self.context, self.context + 1))

    def preload(self, max_bytes: int = PRELOAD_MAX_BYTES) -> bool:
        """Decode every image the dataset reads into its cache now, on threads, if they fit in
        ``max_bytes`` (estimated from the first image); returns whether it did.

        Loader worker processes forked afterwards share these decoded pages instead of each
        decoding (and holding) its own copy of every image it meets; without it a new worker
        spent its first epoch decoding PNGs.
        """
        import concurrent.futures  # noqa: PLC0415

        names = [
            name
            for index in range(len(self.frames))
            for name in self._names(index)
            if name not in self._cache and (self.frames.root / name).is_file()
        ]
        names = list(dict.fromkeys(names))  # context windows overlap
        if not names:
            return True
        first = self._cache[names[0]] = load_image(self.frames.root / names[0])
        if first.numel() * first.element_size() * len(names) > max_bytes:
            return False
        with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            decoded = pool.map(lambda name: load_image(self.frames.root / name), names[1:])
            self._cache.update(zip(names[1:], decoded, strict=True))
        return True

    def _image(self, relative: str, fallback: str) -> torch.Tensor:
        if relative not in self._cache:
            path = self.frames.root / relative
            if not path.is_file():  # a context neighbour that was not extracted: repeat the frame
                return self._image(fallback, fallback)
            self._cache[relative] = load_image(path)
        return self._cache[relative]

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        # (epoch, item) from an EpochSampler; a plain item draws for ``self.epoch``
        epoch, item = item if isinstance(item, tuple) else (self.epoch, item)
        if not 0 <= item < self.length:
            raise IndexError(item)
        index = item % len(self.frames)  # the frame; ``item`` seeds this visit's augmentation
        relative = self.frames.image_paths[index]
        images = [self._image(name, relative) for name in self._names(index)]
        frame_size = tuple(images[0].shape[1:])
        # One draw for all context frames keeps the clip consistent.
        drawn = draw(
            np.random.default_rng([self.seed, epoch, item]),
            self.augment,
            frame_size,
            self.image_size,
        )
        to_model = drawn.to_model
        draws = draws_as_tensors(drawn)
        if self.defer_augment:
            pixels = {"raw": torch.stack(images), **draws}
        else:  # the same batched code path as on the device, for a batch of one
            one = {key: value[None] for key, value in draws.items()}
            pixels = {"image": augment_batch(torch.stack(images)[None], one, self.image_size)[0]}
        keypoints_frame = self.frames.keypoints[index]
        return {
            **pixels,
            "keypoints": torch.as_tensor(
                apply_affine_points(to_model, keypoints_frame), dtype=torch.float32
            ),
            "keypoints_frame": torch.as_tensor(keypoints_frame, dtype=torch.float32),
            "to_frame": torch.as_tensor(invert_affine(to_model), dtype=torch.float32),
            "index": torch.tensor(index),
        }


class EpochSampler(Sampler):
    """Hands a dataset ``(epoch, item)`` pairs: ``base``'s items, tagged with the epoch.

    Loader worker processes index their own copy of the dataset, made when they start, so an
    epoch set on the dataset in the main process never reaches workers that persist across
    epochs; they would repeat the first epoch's augmentation draws. The sampler runs in the main
    process, so tagging each item with the epoch carries it to every worker, and the workers
    (and their decoded-image caches) can live for the whole fit. Lightning's fit loop calls
    :meth:`set_epoch` at the start of every epoch, before it iterates the loader, as it does for
    a ``DistributedSampler`` (tests/train/test_train.py checks it).
    """

    def __init__(self, base: Sampler) -> None:
        self.base = base
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):  # a DistributedSampler reshuffles per epoch
            self.base.set_epoch(epoch)

    def __iter__(self):  # noqa: ANN204 - an iterator of (epoch, item)
        epoch = self.epoch
        return ((epoch, int(item)) for item in self.base)

    def __len__(self) -> int:
        return len(self.base)
