"""The HTML page of the picks: each frame with the members' predictions drawn, and why.

One self-contained file (PNGs inlined as data URIs, inline CSS, no script), like the pipeline's
report, so it opens from a bucket or a mail attachment. Each member's keypoints are rings in the
keypoint's colour, the EKS guess (what the labels stub holds) a filled dot with a dark rim: a
spread of rings is the disagreement that made the frame worth labeling.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from lpray.io.storage import atomic_write
from lpray.select.extraction import png_bytes
from lpray.viz.overlay import keypoint_colors, scale_for

MAX_WIDTH = 640  # overlays wider than this are shrunk after drawing


@dataclass
class PickView:
    """What the page shows of one pick."""

    rank: int
    image: str  # path inside the labeling folder
    video: str
    frame: int
    score: float
    reasons: list[str]
    overlay_png: bytes


def overlay(
    frame: np.ndarray, members_xy: np.ndarray, eks_xy: np.ndarray, colors: np.ndarray
) -> bytes:
    """The frame, enlarged, with ``(M, K, 2)`` member rings and the ``(K, 2)`` EKS dots, as PNG."""
    scale = scale_for(frame.shape[0])
    big = np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1) if scale > 1 else frame
    image = Image.fromarray(np.ascontiguousarray(big))
    pen = ImageDraw.Draw(image)
    ring = max(3.0, 2.0 * scale)
    dot = max(2.0, 1.2 * scale)

    def centre(point: np.ndarray) -> tuple[float, float] | None:
        if not np.isfinite(point).all():
            return None
        x, y = point * scale + (scale - 1) / 2.0  # pixel centre j -> enlarged coordinates
        return float(x), float(y)

    for member in members_xy:
        for point, color in zip(member, colors):
            c = centre(point)
            if c is not None:
                box = (c[0] - ring, c[1] - ring, c[0] + ring, c[1] + ring)
                pen.ellipse(box, outline=tuple(int(v) for v in color), width=1)
    for point, color in zip(eks_xy, colors):
        c = centre(point)
        if c is not None:
            box = (c[0] - dot, c[1] - dot, c[0] + dot, c[1] + dot)
            pen.ellipse(box, fill=tuple(int(v) for v in color), outline=(0, 0, 0))
    if image.width > MAX_WIDTH:  # a lab camera's frame: keep the page a few MB
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)))
    return png_bytes(np.asarray(image))


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.grid{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;border:1px solid #ddd;padding:.5em;max-width:340px}
figure img{max-width:320px;image-rendering:pixelated}
figcaption{font-size:.8em}
.key{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin:0 .2em 0 .6em}
code{background:#f4f4f4;padding:0 .2em}
"""


def render_page(
    picks: list[PickView], keypoints: list[str], colors: np.ndarray, summary: dict
) -> str:
    """The page's HTML."""
    e = html.escape
    legend = "".join(
        f'<span class="key" style="background:rgb{tuple(int(v) for v in c)}"></span>{e(k)}'
        for k, c in zip(keypoints, colors)
    )
    figures = []
    for p in picks:
        data = base64.b64encode(p.overlay_png).decode()
        why = "".join(f"<li>{e(r)}</li>" for r in p.reasons)
        figures.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{e(p.image)}">'
            f"<figcaption><b>#{p.rank}</b> {e(p.video)} frame {p.frame} "
            f"&middot; score {p.score:.3f}<br><code>{e(p.image)}</code>"
            f"<ul>{why}</ul></figcaption></figure>"
        )
    facts = "".join(f"<li>{e(str(k))}: {e(str(v))}</li>" for k, v in summary.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>lpray select-frames: {len(picks)} frames to label</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{len(picks)} frames to label</h1>"
        "<p>Rings: each ensemble member's prediction; filled dots: the EKS guess prefilled in "
        f"<code>CollectedData.csv</code> (scorer <code>{e(summary.get('guess_scorer', ''))}</code>)"
        ". Correct the guesses in your labeler, then <code>lpray merge-labels PROJECT "
        "THIS_FOLDER</code>.</p>"
        f"<p>{legend}</p><ul>{facts}</ul>"
        f'<div class="grid">{"".join(figures)}</div></body></html>'
    )


def write_page(path: str, picks: list[PickView], keypoints: list[str], summary: dict) -> None:
    """Write the page atomically (local or URL)."""
    text = render_page(picks, keypoints, keypoint_colors(len(keypoints)), summary)
    with atomic_write(path, "w") as handle:
        handle.write(text)
