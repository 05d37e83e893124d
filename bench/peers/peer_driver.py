"""Run the peer's own CLI (``litpose train`` / ``litpose predict``) with timers attached.

This file runs inside the PEER's virtual environment (Lightning Pose 2.4.3), never lpray's: it
imports lightning_pose and nothing from lpray. It calls LP's real command-line entry point, so
what is measured is what a user of ``litpose`` runs, and only adds measurements LP does not make:

- training: the same per-batch throughput meter lpray uses (labeled frames over the time between
  ``on_train_batch_start`` and ``on_train_batch_end``, so data loading and validation are
  excluded), plus the wall time of ``Trainer.fit`` (everything: loading, validation, checkpoints);
- prediction: the wall time of LP's ``predict_video`` (decode, network, CSV) inside the command;
- which installed distributions the run imported (the wheel list a GPU machine must carry).

Usage (``run.py`` does this):
  PEER_PY peer_driver.py train CONFIG.yaml MODEL_DIR RESULT.json
  PEER_PY peer_driver.py predict MODEL_DIR VIDEO RESULT.json
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# LP imports moviepy at module level, and moviepy looks for imageio-ffmpeg's bundled ffmpeg
# (a 68 MB wheel) unless told otherwise. The benchmark never writes labeled videos, so where that
# wheel was not carried (GPU machine), let moviepy look for a system ffmpeg instead.
if importlib.util.find_spec("imageio_ffmpeg") is None:
    os.environ.setdefault("FFMPEG_BINARY", "auto-detect")

import lightning.pytorch as pl  # noqa: E402


class ThroughputMeter(pl.Callback):
    """Labeled frames and seconds of training batches only (the definition lpray reports)."""

    def __init__(self) -> None:
        self.frames = 0
        self.steps = 0
        self.seconds = 0.0
        self._start = 0.0

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Any, module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.frames += int(batch["images"].shape[0])
        self.steps += 1
        self.seconds += time.perf_counter() - self._start


def imported_distributions() -> list[str]:
    """Installed distributions whose top-level modules this process imported, sorted.

    Run at the end of a command, it names exactly what the peer needed, not what its
    requirements list: that is the set a machine without network has to be given as wheels.
    """
    mapping = md.packages_distributions()
    loaded = {name.split(".")[0] for name in list(sys.modules)}
    found = {dist for top in loaded for dist in mapping.get(top, [])}
    return sorted(f"{d}=={md.version(d)}" for d in found)


def run_litpose(argv: list[str]) -> float:
    """Run ``litpose ARGV`` in this process (LP's own entry point); return its wall seconds."""
    from lightning_pose.cli.main import main as litpose_main

    sys.argv = ["litpose", *argv]
    started = time.perf_counter()
    litpose_main()
    return time.perf_counter() - started


def train(config: Path, model_dir: Path) -> dict[str, Any]:
    """``litpose train`` with the meter added to LP's callbacks and ``Trainer.fit`` timed."""
    import lightning_pose.train as lp_train

    meter = ThroughputMeter()
    fit_seconds: list[float] = []
    original_callbacks = lp_train.get_callbacks
    original_fit = pl.Trainer.fit

    def callbacks_with_meter(*args: Any, **kwargs: Any) -> list:
        return [*original_callbacks(*args, **kwargs), meter]

    def timed_fit(self: pl.Trainer, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_fit(self, *args, **kwargs)
        finally:
            fit_seconds.append(time.perf_counter() - started)

    lp_train.get_callbacks = callbacks_with_meter
    pl.Trainer.fit = timed_fit  # type: ignore[method-assign]
    command_seconds = run_litpose(["train", str(config), "--output_dir", str(model_dir.absolute())])
    return {
        "command_seconds_in_process": command_seconds,
        "train_seconds": sum(fit_seconds),
        "train_steps": meter.steps,
        "train_frames": meter.frames,
        "batch_seconds": meter.seconds,
        "labeled_frames_per_second": meter.frames / meter.seconds if meter.seconds else None,
        "labeled_predictions_csv": str(model_dir / "predictions.csv"),
    }


def predict(model_dir: Path, video: Path) -> dict[str, Any]:
    """``litpose predict MODEL_DIR VIDEO --skip_viz`` with LP's ``predict_video`` timed."""
    import lightning_pose.api.model as lp_model

    timings: list[tuple[float, int]] = []
    original = lp_model.predict_video

    def timed_predict_video(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        df = original(*args, **kwargs)
        timings.append((time.perf_counter() - started, len(df)))
        return df

    lp_model.predict_video = timed_predict_video
    argv = ["predict", str(model_dir.absolute()), str(video), "--skip_viz", "--overwrite"]
    command_seconds = run_litpose(argv)
    # The same video again in the same process: the rate of every later video of a corpus
    # (start-up costs such as CUDA/cuDNN initialisation are paid by the first only).
    again_seconds = run_litpose(argv)
    (loop_seconds, frames), (again_loop, again_frames) = timings[0], timings[-1]
    return {
        "command_seconds_in_process": command_seconds,
        "again_command_seconds_in_process": again_seconds,
        "predict_seconds": loop_seconds,
        "frames": frames,
        "frames_per_second": frames / loop_seconds if loop_seconds else None,
        "again_frames_per_second": again_frames / again_loop if again_loop else None,
        "predictions_csv": str(model_dir / "video_preds" / f"{video.stem}.csv"),
    }


def main(argv: list[str]) -> int:
    """Dispatch ``train``/``predict``; write the result JSON (with the imported wheel list)."""
    if len(argv) != 4 or argv[0] not in ("train", "predict"):
        print(__doc__, file=sys.stderr)
        return 2
    command, first, second, result_path = argv
    if command == "train":
        result = train(Path(first), Path(second))
    else:
        result = predict(Path(first), Path(second))
    result["lightning_pose_version"] = md.version("lightning-pose")
    result["imported_distributions"] = imported_distributions()
    Path(result_path).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
