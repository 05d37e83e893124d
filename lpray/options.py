"""Names users pick from that several layers share: video readers, network precisions, tracking
overlays. The one place they are listed; this module imports nothing heavy, so the CLI builds its
parsers from it without importing torch or Ray."""

from __future__ import annotations

# video readers: DALI on a GPU (and on the CPU for VP8/VP9/MJPEG), PyAV for everything else
BACKENDS = ("auto", "pyav", "dali")
# network precision at inference: auto = bf16 autocast on a GPU, float32 on a CPU
PRECISIONS = ("auto", "bf16", "fp32")
# what `lpray track` draws per video: a PNG strip of sample frames, a labeled mp4, both, nothing
OVERLAYS = ("strip", "video", "both", "none")
