"""The PyAV reader's twin of the DALI graph: warp to the model input, photometric, normalise.

Both readers sample bilinearly and fill outside the frame with black (like
:func:`lpray.data.augment.warp_images` for labeled frames and imgaug's default in Lightning Pose),
and both apply contrast about grey level 128 (DALI's ``brightness_contrast`` centre), so their
outputs agree to decoder rounding.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lpray.data.geometry import to_frame_matrix
from lpray.data.normalise import imagenet_stats

# Frames warped per call, bounding the float32 working memory (a 96-frame prediction block is
# one slice).
_WARP_SLICE = 128


def _is_plain_resize(
    to_frame: torch.Tensor, frame_size: tuple[int, int], image_size: tuple[int, int]
) -> bool:
    """True when every matrix is exactly the align_corners=False resize (no augmentation) and it
    does not enlarge the frame: then every sample lies inside the frame, and ``F.interpolate``
    takes the same samples as the black-filled ``grid_sample``."""
    if frame_size[0] < image_size[0] or frame_size[1] < image_size[1]:
        return False
    resize = to_frame_matrix(np.eye(2, 3), frame_size, image_size)
    return bool(torch.allclose(to_frame.double().cpu(), torch.from_numpy(resize), atol=1e-6))


def _sampling_grid(
    m: torch.Tensor, frame_size: tuple[int, int], image_size: tuple[int, int]
) -> torch.Tensor:
    """``grid_sample`` grid (align_corners=False) of the frame positions ``m`` sends each
    model-input pixel centre to."""
    (frame_h, frame_w), (height, width) = frame_size, image_size
    ys, xs = torch.meshgrid(
        torch.arange(height, device=m.device, dtype=torch.float32),
        torch.arange(width, device=m.device, dtype=torch.float32),
        indexing="ij",
    )
    src_x = m[:, 0, 0, None, None] * xs + m[:, 0, 1, None, None] * ys + m[:, 0, 2, None, None]
    src_y = m[:, 1, 0, None, None] * xs + m[:, 1, 1, None, None] * ys + m[:, 1, 2, None, None]
    return torch.stack([(2 * src_x + 1) / frame_w - 1, (2 * src_y + 1) / frame_h - 1], dim=-1)


def warp_normalise(
    frames: torch.Tensor,
    to_frame: torch.Tensor,
    image_size: tuple[int, int],
    contrast: torch.Tensor | None = None,
    brightness: torch.Tensor | None = None,
) -> torch.Tensor:
    """Warp, photometric, ImageNet-normalise, CHW: what the DALI graph does, in torch.

    Args:
        frames: (N, H_frame, W_frame, 3) uint8 RGB.
        to_frame: (N, 2, 3) or (2, 3) model-input pixel -> frame pixel, centre convention.
        image_size: model input (H, W).
        contrast: (N,) factors about grey 128, or None.
        brightness: (N,) shifts as fractions of the grey range, or None.

    Returns:
        (N, 3, H, W) float32 on ``frames.device``.
    """
    n, frame_h, frame_w, _ = frames.shape
    height, width = image_size
    device = frames.device
    m = to_frame.to(device=device, dtype=torch.float32).expand(n, 2, 3)
    plain = _is_plain_resize(m, (frame_h, frame_w), image_size)
    grid = None if plain else _sampling_grid(m, (frame_h, frame_w), image_size)
    pieces = []
    for lo in range(0, n, _WARP_SLICE):
        hi = min(n, lo + _WARP_SLICE)
        source = frames[lo:hi].permute(0, 3, 1, 2).float()
        if plain:  # same samples as the grid below, about 3x faster on CPU
            pieces.append(
                F.interpolate(source, size=(height, width), mode="bilinear", align_corners=False)
            )
        else:
            pieces.append(
                F.grid_sample(
                    source, grid[lo:hi], mode="bilinear", padding_mode="zeros", align_corners=False
                )
            )
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    if contrast is not None and brightness is not None:
        c = contrast.to(device=device, dtype=torch.float32).view(n, 1, 1, 1)
        b = brightness.to(device=device, dtype=torch.float32).view(n, 1, 1, 1)
        out = out.sub_(128.0).mul_(c).add_(128.0 + 255.0 * b).clamp_(0.0, 255.0)
    # (x - mean) / std in place, as x * (1 / std) - mean / std: no full-size temporaries
    mean, std = imagenet_stats(device, torch.float32)
    std, mean = std * 255.0, mean * 255.0
    return out.mul_(1.0 / std).sub_(mean / std)
