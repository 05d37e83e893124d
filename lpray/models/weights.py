"""Pretrained weight files, fetched the way torch does it and checked before use.

Files live in the torch hub cache (``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch`` by
default), where torchvision and ``torch.hub`` keep them, so weights one tool downloaded serve
the others. A missing file is downloaded on first use with a progress bar; a file whose name
carries a hash prefix (torchvision's ``resnet50-0676ba61.pth``: the first hex digits of its
SHA-256; OpenMMLab's ``res50_ap10k_256x256-35760eb8_20211029.pth`` has a date after it) is
verified, when downloaded and every time it is used, so a truncated or corrupt file is refused
rather than loaded. ``LPRAY_OFFLINE=1`` (for nodes without internet, and the tests)
never downloads: a missing file is then an error naming the file, its URL and where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
from pathlib import Path
from typing import Any

import torch

from lpray.errors import UserError

log = logging.getLogger(__name__)

# torch.hub's convention: "<name>-<hex>.<ext>", the hex a prefix of the file's SHA-256;
# OpenMMLab's publish_model.py writes "<name>-<8 hex of sha256sum>_<YYYYMMDD>.pth"
_HASH = re.compile(r"-([a-f0-9]{6,})(?:_\d{8})?\.")
OFFLINE_ENV = "LPRAY_OFFLINE"


class PretrainedWeightsUnavailable(UserError, RuntimeError):
    """Pretrained weights were asked for but cannot be had: offline, or a corrupt file."""


def cache_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's own rule for where weight files go)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_weights(url: str, what: str, progress: bool = True) -> Path:
    """The local file of the weights at ``url``: the cached copy, else downloaded now.

    Args:
        url: where the file is published (``https://``, or ``file://`` for a local mirror).
        what: named in errors (e.g. "model.pretrained: ImageNet weights for resnet50").
        progress: show a progress bar while downloading.

    Raises:
        PretrainedWeightsUnavailable: offline (``LPRAY_OFFLINE``) or unreachable with no cached
            copy, or a file whose SHA-256 does not match the hash in its name.
    """
    filename = url.rsplit("/", 1)[-1]
    path = cache_dir() / filename
    expected = _HASH.search(filename)
    if not path.is_file():
        where = (
            f"put the file from {url} at {path} (or set TORCH_HOME to a folder holding "
            "hub/checkpoints/" + filename + ")"
        )
        if os.environ.get(OFFLINE_ENV):
            raise PretrainedWeightsUnavailable(
                f"{what}: {filename} is not cached and {OFFLINE_ENV} is set: {where}, or set "
                "model.pretrained=false for random initialisation"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s to %s", url, path)
        try:
            torch.hub.download_url_to_file(
                url,
                str(path),
                hash_prefix=expected.group(1) if expected else None,
                progress=progress,
            )
        except (urllib.error.URLError, OSError, RuntimeError) as error:
            raise PretrainedWeightsUnavailable(
                f"{what}: could not download {url} ({error}): {where}, or set "
                "model.pretrained=false for random initialisation"
            ) from error
    if expected and not _sha256(path).startswith(expected.group(1)):
        raise PretrainedWeightsUnavailable(
            f"{what}: {path} is corrupt (its SHA-256 does not start with {expected.group(1)}, "
            f"as its name says): delete it to download it again from {url}"
        )
    return path


def _numpy_scalar_globals() -> list[object]:
    """What unpickling numpy scalars needs (``np.float64(0.68)`` in a checkpoint's metadata):
    the scalar constructor, under numpy 2's module name and numpy 1's (files saved with numpy 1
    name ``numpy.core.multiarray.scalar``), and the dtypes. No class that runs code on load."""
    import numpy as np  # noqa: PLC0415 - only for checkpoints that need it

    try:
        from numpy._core.multiarray import scalar  # noqa: PLC0415 - numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import scalar  # noqa: PLC0415
    dtypes = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFD"}
    return [(scalar, "numpy.core.multiarray.scalar"), scalar, np.dtype, *dtypes]


def load_weights(url: str, what: str, numpy_scalars: bool = False) -> dict[str, Any]:
    """:func:`fetch_weights`, then the file's contents (the safe ``weights_only`` loader).

    Args:
        url: where the file is published (see :func:`fetch_weights`).
        what: named in errors.
        numpy_scalars: also accept numpy scalars (training frameworks' checkpoints keep e.g.
            the best validation score as one in their metadata; needs torch >= 2.6).
    """
    path = fetch_weights(url, what)
    try:
        if numpy_scalars:
            with torch.serialization.safe_globals(_numpy_scalar_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a file of the right name that is no state dict
        raise PretrainedWeightsUnavailable(
            f"{what}: {path} is not a readable weights file ({error}): delete it to download "
            f"it again from {url}"
        ) from error
