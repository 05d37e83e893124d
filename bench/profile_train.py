"""CUDA-level profile of the semi-supervised GPU training step: inside Lightning vs bare.

``bench/train.py --gpu`` times the whole training loop (about 60 ms a step for 32 labeled + 16
unlabeled frames on one H100) and lpray's step alone on random GPU tensors (about 30 ms). This
script runs ``torch.profiler`` (CPU + CUDA activities) over a few steps of each, in the config of
train.py's ``plain-device`` run, and says where the difference goes:

- per step and per phase of the step (markers at Lightning's hooks: forward + losses + logging,
  backward, optimizer, then fetching, moving and augmenting the next batch): wall time, GPU busy
  time (union of all kernels, copies and memsets on every stream) and GPU idle time;
- which host work runs while the GPU sits idle: the innermost torch op (and, in the window with
  Python stacks, the innermost lpray / bench / Lightning frame) at the middle of each idle gap;
- host calls that block on the device (``cudaStreamSynchronize`` & co.) and who made them;
- the top CUDA kernels and host ops per step;
- over further steps under ``torch.cuda.set_sync_debug_mode("warn")``: every synchronising call,
  with its thread and Python stack.

Windows (global steps, 50 per epoch): ``--start`` (plain profile), ``--start + 10`` (with Python
stacks, slower host), ``--start + 20`` (sync debug mode); per-step wall times of the last epoch
(no profiler) are reported too. The bare step is profiled the same way (``--skip-bare`` omits it).

Writes OUT/profile_<label>.json (numbers), OUT/profile_<label>.txt (report, tables) and
OUT/trace_<label>_<window>.json.gz (Chrome traces for https://ui.perfetto.dev).

Experiments: ``--cuda-graphs`` (the Lightning run with ``training.cuda_graphs``), ``--graph-backbone``
(the backbone CUDA-graphed by this script, bare step and Lightning run), ``--throttle-logging``
(training_step's ``self.log`` calls only on the steps whose logs Lightning writes).

Usage: python bench/profile_train.py --out DIR [--label base] [--epochs 3] [--steps 6]
       [--cuda-graphs] [--graph-backbone] [--throttle-logging] [--skip-bare] [--traces plain]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
STEP = "lpray_step"  # marker at the start of each step
USER_DIRS = ("/lpray/", "/bench/")


def marker(name: str) -> None:
    """A zero-length annotation in the trace (a no-op when no profiler runs)."""
    import torch

    with torch.profiler.record_function(name):
        pass


# -- trace analysis -------------------------------------------------------------------------------


def _union(intervals: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    """Merged intervals clipped to [lo, hi); ``intervals`` sorted by start."""
    merged: list[tuple[float, float]] = []
    for start, end in intervals:
        start, end = max(start, lo), min(end, hi)
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _gaps(busy: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    gaps, cursor = [], lo
    for start, end in busy:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if hi > cursor:
        gaps.append((cursor, hi))
    return gaps


def _enclosing(events: list[dict[str, Any]], times: list[float]) -> list[list[dict[str, Any]]]:
    """For each time (sorted), the stack of properly nested ``events`` (one thread) containing it,
    outermost first."""
    events = sorted(events, key=lambda e: (e["ts"], -e["dur"]))
    out, stack, i = [], [], 0
    for t in times:
        while i < len(events) and events[i]["ts"] <= t:
            e = events[i]
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            stack.append(e)
            i += 1
        while stack and stack[-1]["ts"] + stack[-1]["dur"] < t:
            stack.pop()
        out.append([e for e in stack if e["ts"] + e["dur"] >= t])
    return out


def _frame_label(frames: list[dict[str, Any]]) -> str:
    """Innermost lpray/bench frame, else innermost Lightning frame, else innermost frame."""
    names = [f["name"] for f in frames]
    for wanted in (USER_DIRS, ("pytorch_lightning/",)):
        hits = [n for n in names if any(w in n for w in wanted)]
        if hits:
            return _short(hits[-1])
    return _short(names[-1]) if names else "-"


def _short(name: str) -> str:
    for cut in ("site-packages/", "/lpray/", "/bench/"):
        if cut in name:
            keep = name.split(cut, 1)[1]
            return ("lpray/" if cut == "/lpray/" else "bench/" if cut == "/bench/" else "") + keep
    return name[-90:]


def analyse(path: Path, phases: tuple[str, ...], gap_us: float) -> dict[str, Any]:
    """Per-step GPU busy/idle, per-phase split, idle attribution, syncs, top kernels and ops."""
    with open(path) as handle:
        events = [e for e in json.load(handle)["traceEvents"] if e.get("ph") == "X" and "dur" in e]
    marks = [e for e in events if e.get("cat") == "user_annotation" and e["name"] in phases]
    main_tid = next(e["tid"] for e in marks if e["name"] == STEP)
    starts = sorted(e["ts"] for e in marks if e["name"] == STEP)
    windows = list(zip(starts[:-1], starts[1:]))
    gpu = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") in GPU_CATS)
    main = [e for e in events if e.get("tid") == main_tid]
    ops = [e for e in main if e.get("cat") == "cpu_op"]
    # backward runs on autograd's own thread(s), the main thread waiting in loss.backward()
    engine_tids = {
        e["tid"]
        for e in events
        if e.get("cat") == "cpu_op" and e["name"].startswith("autograd::engine")
    } - {main_tid}
    engine_ops = [e for e in events if e.get("cat") == "cpu_op" and e.get("tid") in engine_tids]
    frames = [e for e in main if e.get("cat") == "python_function"]
    runtime = [e for e in events if e.get("cat") == "cuda_runtime"]

    steps, phase_rows = [], collections.defaultdict(lambda: [0.0, 0.0])
    idle_by: collections.Counter[str] = collections.Counter()
    idle_small = 0.0
    for lo, hi in windows:
        busy = _union(gpu, lo, hi)
        busy_us = sum(b - a for a, b in busy)
        gaps = _gaps(busy, lo, hi)
        steps.append(
            {
                "wall_ms": (hi - lo) / 1e3,
                "gpu_busy_ms": busy_us / 1e3,
                "gpu_busy_pct": 100 * busy_us / (hi - lo),
                "gaps_over_threshold": sum(1 for a, b in gaps if b - a >= gap_us),
            }
        )
        # phases: consecutive markers inside the window
        cuts = sorted((e["ts"], e["name"]) for e in marks if lo <= e["ts"] < hi)
        cuts.append((hi, STEP))
        for (a, name), (b, _) in zip(cuts[:-1], cuts[1:]):
            inside = sum(y - x for x, y in _union(gpu, a, b))
            phase_rows[name][0] += (b - a) / len(windows) / 1e3
            phase_rows[name][1] += inside / len(windows) / 1e3
        big = [(a, b) for a, b in gaps if b - a >= gap_us]
        idle_small += sum(b - a for a, b in gaps if b - a < gap_us)
        mids = [(a + b) / 2 for a, b in big]
        op_stacks = _enclosing(ops, mids)
        engine_stacks = _enclosing(engine_ops, mids)
        frame_stacks = _enclosing(frames, mids) if frames else [[] for _ in mids]
        for (a, b), op_stack, engine_stack, frame_stack in zip(
            big, op_stacks, engine_stacks, frame_stacks
        ):
            prefix = ""
            if not op_stack and engine_stack:
                op_stack, prefix = engine_stack, "[autograd thread] "
            op = op_stack[-1]["name"] if op_stack else "(no torch op: Python / waiting)"
            outer = prefix + (op_stack[0]["name"] if op_stack else "")
            label = prefix + op if outer in ("", prefix + op) else f"{outer} > {op}"
            if frames:
                label += f"  @ {_frame_label(frame_stack)}"
            idle_by[label] += (b - a) / len(windows) / 1e3

    # host calls that block on the device, with the op / frame that made them
    lo, hi = windows[0][0], windows[-1][1]
    blocking = [e for e in runtime if e["name"] in SYNC_CALLS and lo <= e["ts"] < hi]
    blocking_main = sorted((e for e in blocking if e["tid"] == main_tid), key=lambda e: e["ts"])
    mids = [e["ts"] + e["dur"] / 2 for e in blocking_main]
    op_stacks = _enclosing(ops, mids)
    frame_stacks = _enclosing(frames, mids) if frames else [[] for _ in mids]
    sync_by: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for e, op_stack, frame_stack in zip(blocking_main, op_stacks, frame_stacks):
        label = f"{e['name']} in {op_stack[-1]['name'] if op_stack else '-'}"
        if op_stack and op_stack[0]["name"] != op_stack[-1]["name"]:
            label += f" (under {op_stack[0]['name']})"
        if frames:
            label += f"  @ {_frame_label(frame_stack)}"
        sync_by[label][0] += 1 / len(windows)
        sync_by[label][1] += e["dur"] / len(windows) / 1e3
    other_threads = collections.Counter()
    for e in blocking:
        if e["tid"] != main_tid:
            other_threads[f"{e['name']} (tid {e['tid']})"] += e["dur"] / len(windows) / 1e3

    kernels: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") in GPU_CATS and lo <= e["ts"] < hi:
            kernels[e["name"][:110]] += e["dur"] / len(windows) / 1e3
    self_cpu = _self_times(ops, lo, hi)
    return {
        "steps": steps,
        "median_wall_ms": statistics.median(s["wall_ms"] for s in steps),
        "mean_wall_ms": statistics.mean(s["wall_ms"] for s in steps),
        "median_gpu_busy_ms": statistics.median(s["gpu_busy_ms"] for s in steps),
        "median_gpu_busy_pct": statistics.median(s["gpu_busy_pct"] for s in steps),
        "phases_ms_per_step": {k: {"wall": v[0], "gpu_busy": v[1]} for k, v in phase_rows.items()},
        "idle_small_gaps_ms_per_step": idle_small / len(windows) / 1e3,
        "idle_ms_per_step_by_host_work": dict(idle_by.most_common(25)),
        "blocking_calls_main_thread_per_step": {
            k: {"count": round(v[0], 2), "ms": v[1]}
            for k, v in sorted(sync_by.items(), key=lambda kv: -kv[1][1])
        },
        "blocking_calls_other_threads_ms_per_step": dict(other_threads.most_common(10)),
        "top_gpu_ms_per_step": dict(kernels.most_common(20)),
        "gpu_total_ms_per_step": sum(kernels.values()),
        "top_host_self_ms_per_step": {k: v / len(windows) for k, v in self_cpu.most_common(20)},
        "host_op_ms_per_step": sum(
            e["dur"] for e in ops if lo <= e["ts"] < hi and not _has_parent(e)
        )
        / len(windows)
        / 1e3,
        "windows": len(windows),
    }


def _has_parent(event: dict[str, Any]) -> bool:
    return event.get("_parent", False)


def _self_times(ops: list[dict[str, Any]], lo: float, hi: float) -> collections.Counter[str]:
    """Self host time (ms) of torch ops on the main thread; marks nested ops (``_parent``)."""
    inside = sorted((e for e in ops if lo <= e["ts"] < hi), key=lambda e: (e["ts"], -e["dur"]))
    totals: collections.Counter[str] = collections.Counter()
    stack: list[list[Any]] = []  # [event, child time]
    for e in inside:
        while stack and stack[-1][0]["ts"] + stack[-1][0]["dur"] <= e["ts"]:
            done, child = stack.pop()
            totals[done["name"]] += (done["dur"] - child) / 1e3
        if stack:
            stack[-1][1] += e["dur"]
            e["_parent"] = True
        stack.append([e, 0.0])
    for done, child in stack:
        totals[done["name"]] += (done["dur"] - child) / 1e3
    return totals


# -- synchronising calls, with stacks ---------------------------------------------------------


class SyncRecorder:
    """Counts ``torch.cuda.set_sync_debug_mode("warn")`` warnings by thread and Python stack."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, tuple[str, ...]]] = collections.Counter()
        self.steps = 0
        self._show = warnings.showwarning

    def start(self) -> None:
        import torch

        warnings.filterwarnings("always", message=".*synchroniz.*")
        warnings.showwarning = self._record
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        import torch

        torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = self._show

    def _record(self, message: Any, category: Any, filename: str, lineno: int, *rest: Any) -> None:
        if "synchroniz" not in str(message):
            self._show(message, category, filename, lineno, *rest)
            return
        stack = traceback.extract_stack()[:-2]
        keep = [
            f
            for f in stack
            if any(d in f.filename for d in USER_DIRS)
            or "pytorch_lightning" in f.filename
            or "torch/optim" in f.filename
            or "torch/utils/data" in f.filename
            or "nvidia/dali" in f.filename
        ]
        frames = tuple(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in keep[-5:])
        self.counts[(threading.current_thread().name, frames)] += 1

    def report(self) -> list[dict[str, Any]]:
        steps = max(1, self.steps)
        return [
            {"thread": thread, "per_step": n / steps, "stack": list(frames)}
            for (thread, frames), n in self.counts.most_common(30)
        ]


def graph_backbone(backbone: Any, shape: tuple[int, ...], channels_last: bool) -> None:
    """Experiment (``--graph-backbone``): the backbone's training forward and backward captured
    as CUDA graphs with ``torch.cuda.make_graphed_callables``, in place (in eval mode it runs
    its eager forward; training inputs must have ``shape``, as in this bench). BatchNorm
    statistics are restored after the capture's warm-up passes on random data."""
    import torch

    backbone.train()
    saved = {name: b.detach().clone() for name, b in backbone.named_buffers()}
    sample = torch.randn(shape, device="cuda")
    if channels_last:
        sample = sample.contiguous(memory_format=torch.channels_last)
    with (
        torch.enable_grad(),
        torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False),
    ):
        torch.cuda.make_graphed_callables(backbone, (sample,))
    with torch.no_grad():
        for name, b in backbone.named_buffers():
            b.copy_(saved[name])
    torch.cuda.synchronize()


# -- the Lightning run --------------------------------------------------------------------------


def lightning_profile(
    work: Path, out: Path, label: str, args: argparse.Namespace
) -> dict[str, Any]:
    import pytorch_lightning as pl
    import torch
    from torch.profiler import ProfilerActivity, profile
    from train import GPU_CONFIG, plain_run, run_config, with_augment_on

    from lpray.train import fit

    windows = {args.start: "plain", args.start + 10: "stack"}
    sync_at = args.start + 20
    recorder = SyncRecorder()
    step_times: dict[int, float] = {}
    traces: dict[str, Path] = {}

    class Window(pl.Callback):
        def __init__(self) -> None:
            self.prof: Any = None
            self.name = ""
            self.until = -1

        def on_train_batch_start(self, trainer, module, batch, idx) -> None:  # noqa: ANN001
            step = trainer.global_step
            step_times[step] = time.perf_counter()
            if self.prof is not None and step == self.until:
                marker(STEP)
                torch.cuda.synchronize()
                self.prof.stop()
                traces[self.name] = out / f"trace_{label}_lightning_{self.name}.json"
                self.prof.export_chrome_trace(str(traces[self.name]))
                self.prof = None
            if step in windows:
                self.name = windows[step]
                self.until = step + (args.stack_steps if self.name == "stack" else args.steps)
                self.prof = profile(
                    activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                    with_stack=self.name == "stack",
                )
                self.prof.start()
            if step == sync_at:
                recorder.start()
            if step == sync_at + args.steps:
                recorder.stop()
            if sync_at <= step < sync_at + args.steps:
                recorder.steps += 1
            marker(STEP)

        def on_train_start(self, trainer, module) -> None:  # noqa: ANN001
            if args.graph_backbone:
                t = module.cfg.training
                n = t.batch_size + t.unlabeled_sequences * t.sequence_length
                graph_backbone(module.model.backbone, (n, 3, *module.image_size), False)

        def on_before_backward(self, trainer, module, loss) -> None:  # noqa: ANN001
            marker("backward")

        def on_after_backward(self, trainer, module) -> None:  # noqa: ANN001
            marker("after_backward")

        def on_before_optimizer_step(self, trainer, module, optimizer) -> None:  # noqa: ANN001
            marker("optimizer")

        def on_train_batch_end(self, trainer, module, outputs, batch, idx) -> None:  # noqa: ANN001
            marker("batch_end_next_fetch")

    values = run_config(
        with_augment_on(GPU_CONFIG, "device"), work, f"profile-{label}", args.epochs
    )
    values["training"]["cuda_graphs"] = args.cuda_graphs
    build_trainer = fit.build_trainer

    def patched(cfg, model_dir, callbacks=(), **kw):  # noqa: ANN001, ANN202
        return build_trainer(cfg, model_dir, callbacks=[*callbacks, Window()], **kw)

    from lpray.train.module import PoseModule

    log = PoseModule.log

    def throttled(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        """training_step's self.log only on the steps Lightning writes the logs."""
        connector = self.trainer._logger_connector
        if self._current_fx_name == "training_step" and not connector.should_update_logs:
            return None
        return log(self, *a, **k)

    with (
        mock.patch.object(fit, "build_trainer", patched),
        mock.patch.object(fit, "write_summary", lambda *a, **k: {}),
        mock.patch.object(PoseModule, "log", throttled if args.throttle_logging else log),
    ):
        plain_run(values)
    per_epoch = values["training"]["min_steps_per_epoch"]
    last = sorted(s for s in step_times if s >= per_epoch * (args.epochs - 1))
    intervals = [1e3 * (step_times[b] - step_times[a]) for a, b in zip(last[:-1], last[1:])]
    frames = 32 + 16
    result: dict[str, Any] = {
        "unprofiled_last_epoch_step_ms_median": statistics.median(intervals),
        "unprofiled_last_epoch_frames_per_s": 1e3 * frames / statistics.median(intervals),
        "sync_debug": recorder.report(),
    }
    phases = (STEP, "backward", "after_backward", "optimizer", "batch_end_next_fetch")
    for name, path in traces.items():
        result[name] = analyse(path, phases, args.gap_us)
        _gzip(path)
    return result


# -- the bare step --------------------------------------------------------------------------------


def bare_profile(work: Path, out: Path, label: str, args: argparse.Namespace) -> dict[str, Any]:
    """bench/train.py's model_step_rate step, profiled (plain and with stacks) and timed."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from train import GPU_CONFIG, bare_step, run_config

    bare = bare_step(run_config(GPU_CONFIG, work, "profile-bare", args.epochs))
    if args.graph_backbone:
        h, w = bare.labeled["image"].shape[-2:]
        graph_backbone(bare.module.model.backbone, (bare.frames_per_step, 3, h, w), True)

    def step() -> None:
        bare.run(lambda name: marker(STEP if name == "step" else name))

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(20):
            step()
        torch.cuda.synchronize()
        timings.append(1e3 * (time.perf_counter() - started) / 20)
    result: dict[str, Any] = {
        "step_ms_median": statistics.median(timings),
        "frames_per_s": 1e3 * bare.frames_per_step / statistics.median(timings),
    }
    recorder = SyncRecorder()
    recorder.start()
    for _ in range(args.steps):
        step()
    recorder.stop()
    recorder.steps = args.steps
    result["sync_debug"] = recorder.report()
    for name in ("plain", "stack"):
        prof = profile(
            activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=name == "stack"
        )
        prof.start()
        for _ in range(args.stack_steps if name == "stack" else args.steps):
            step()
        marker(STEP)
        torch.cuda.synchronize()
        prof.stop()
        path = out / f"trace_{label}_bare_{name}.json"
        prof.export_chrome_trace(str(path))
        result[name] = analyse(path, (STEP, "backward", "optimizer"), args.gap_us)
        _gzip(path)
    return result


KEEP_TRACES = {"all"}  # --traces: which traces to keep (gzipped) beside the numbers


def _gzip(path: Path) -> None:
    name = path.stem.rsplit("_", 1)[-1]  # plain / stack
    if "all" in KEEP_TRACES or name in KEEP_TRACES:
        with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb", compresslevel=6) as dst:
            dst.write(src.read())
    path.unlink()


# -- report ---------------------------------------------------------------------------------------


def report(result: dict[str, Any]) -> str:
    lines = []
    for run in ("bare", "lightning"):
        if run not in result:
            continue
        r = result[run]
        lines.append(f"=== {run} ===")
        for key in (
            "step_ms_median",
            "frames_per_s",
            "unprofiled_last_epoch_step_ms_median",
            "unprofiled_last_epoch_frames_per_s",
        ):
            if key in r:
                lines.append(f"{key}: {r[key]:.2f}")
        for window in ("plain", "stack"):
            if window not in r:
                continue
            a = r[window]
            lines.append(f"--- {run} / {window} window ({a['windows']} steps) ---")
            lines.append(
                f"step wall {a['median_wall_ms']:.2f} ms (mean {a['mean_wall_ms']:.2f}), GPU busy {a['median_gpu_busy_ms']:.2f}"
                f" ms ({a['median_gpu_busy_pct']:.1f}%), GPU kernel time "
                f"{a['gpu_total_ms_per_step']:.2f} ms, small-gap idle "
                f"{a['idle_small_gaps_ms_per_step']:.2f} ms"
            )
            lines.append("phases (ms per step: wall / GPU busy):")
            for name, v in a["phases_ms_per_step"].items():
                lines.append(f"  {name:24s} {v['wall']:7.2f} / {v['gpu_busy']:7.2f}")
            lines.append("GPU idle (ms per step) by host work at the gap's middle:")
            for name, ms in a["idle_ms_per_step_by_host_work"].items():
                lines.append(f"  {ms:7.2f}  {name}")
            lines.append("blocking calls on the main thread (per step: count, ms):")
            for name, v in a["blocking_calls_main_thread_per_step"].items():
                lines.append(f"  {v['count']:5.1f} {v['ms']:7.2f}  {name}")
            lines.append("blocking calls on other threads (ms per step):")
            for name, ms in a["blocking_calls_other_threads_ms_per_step"].items():
                lines.append(f"  {ms:7.2f}  {name}")
            lines.append("top GPU work (ms per step):")
            for name, ms in list(a["top_gpu_ms_per_step"].items())[:12]:
                lines.append(f"  {ms:7.2f}  {name}")
            lines.append(
                f"top host self time, main thread (ms per step; all top-level ops "
                f"{a['host_op_ms_per_step']:.2f}):"
            )
            for name, ms in list(a["top_host_self_ms_per_step"].items())[:12]:
                lines.append(f"  {ms:7.2f}  {name}")
        lines.append("synchronising calls (sync debug mode; per step, thread, stack):")
        for row in r.get("sync_debug", []):
            lines.append(
                f"  {row['per_step']:5.2f}  [{row['thread']}]  "
                + " <- ".join(reversed(row["stack"]))
            )
    return "\n".join(lines)


def summary_table(result: dict[str, Any]) -> str:
    rows = []
    for run in ("bare", "lightning"):
        for window in ("plain", "stack"):
            if run in result and window in result[run]:
                a = result[run][window]
                syncs = sum(v["count"] for v in a["blocking_calls_main_thread_per_step"].values())
                rows.append(
                    f"{run:9s} {window:6s} wall {a['median_wall_ms']:6.2f} ms  GPU busy "
                    f"{a['median_gpu_busy_ms']:6.2f} ms ({a['median_gpu_busy_pct']:5.1f}%)  "
                    f"blocking syncs/step {syncs:4.1f}"
                )
    if "lightning" in result:
        rows.append(
            f"lightning unprofiled step {result['lightning']['unprofiled_last_epoch_step_ms_median']:.2f}"
            f" ms = {result['lightning']['unprofiled_last_epoch_frames_per_s']:.0f} frames/s"
        )
    if "bare" in result:
        rows.append(
            f"bare unprofiled step {result['bare']['step_ms_median']:.2f} ms = "
            f"{result['bare']['frames_per_s']:.0f} frames/s"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--label", default="base", help="names the output files")
    parser.add_argument("--work", default=None, help="scratch folder (synthetic data is reused)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--start", type=int, default=60, help="first profiled global step")
    parser.add_argument("--steps", type=int, default=6, help="steps per window")
    parser.add_argument("--gap-us", type=float, default=20.0, help="idle gaps attributed")
    parser.add_argument("--stack-steps", type=int, default=4, help="steps of the stack window")
    parser.add_argument(
        "--traces",
        nargs="*",
        default=["all"],
        choices=["all", "plain", "stack"],
        help="traces kept, gzipped (none: --traces with no value)",
    )
    parser.add_argument(
        "--graph-backbone",
        action="store_true",
        help="experiment: the backbone's training forward + backward as CUDA graphs",
    )
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="Lightning run with training.cuda_graphs"
    )
    parser.add_argument(
        "--throttle-logging",
        action="store_true",
        help="experiment: training_step's self.log only on steps whose logs Lightning writes",
    )
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--skip-lightning", action="store_true")
    args = parser.parse_args()
    KEEP_TRACES.clear()
    KEEP_TRACES.update(args.traces)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="lpray-profile-"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import lpray

    result: dict[str, Any] = {"args": vars(args), "lpray": lpray.__file__}
    print(f"lpray from {lpray.__file__}", flush=True)
    if not args.skip_lightning:
        result["lightning"] = lightning_profile(work, out, args.label, args)
    if not args.skip_bare:
        result["bare"] = bare_profile(work, out, args.label, args)
    (out / f"profile_{args.label}.json").write_text(json.dumps(result, indent=1, default=str))
    text = report(result)
    (out / f"profile_{args.label}.txt").write_text(text + "\n\n" + summary_table(result) + "\n")
    print(text)
    print()
    print(summary_table(result))


if __name__ == "__main__":
    main()
