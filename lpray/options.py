"""Names users pick from that several layers share: video readers, network precisions, tracking
overlays. This module imports nothing heavy, so the CLI builds its parsers from it without
importing torch or Ray; names that a registry owns come from it."""

from __future__ import annotations

from lpray.data.reader_registry import list_backends

# video readers (lpray.data.reader_registry): DALI on a GPU (and on the CPU for VP8/VP9/MJPEG),
# PyAV for everything else; "auto" picks per video and device
BACKENDS = list_backends()
# network precision at inference: auto = bf16 autocast on a GPU, float32 on a CPU
PRECISIONS = ("auto", "bf16", "fp32")
# what `lpray track` draws per video: a PNG strip of sample frames, a labeled mp4, both, nothing
OVERLAYS = ("strip", "video", "both", "none")
# the environment variable with the level of the library messages Ray workers print (the CLI
# sets it one level quieter than the command's: lpray.train.trainer.quiet_training_worker)
WORKER_LOG_LEVEL = "LPRAY_WORKER_LOG_LEVEL"
