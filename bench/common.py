"""Shared benchmark helpers: machine description, medians, result tables and JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# LPRAY_BENCH_RESULTS: write elsewhere (the smoke tests write to a temporary folder)
RESULTS = Path(os.environ.get("LPRAY_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))
# ../shared/data beside the checkout; LPRAY_SHARED_DATA points elsewhere (e.g. on the GPU machine).
SHARED_DATA = Path(
    os.environ.get("LPRAY_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """CPU model, cores, GPU (if any) and library versions, stated in every result file."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain aligned table on stdout."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


@contextlib.contextmanager
def work_folder(given: Path | None, default: Path, smoke: bool) -> Iterator[Path]:
    """The bench's work folder: the one given, else for a smoke run a temporary one, removed
    afterwards (its files are of no later use and must not land in the checkout), else the
    default."""
    if given is not None:
        yield given
    elif smoke:
        with tempfile.TemporaryDirectory(prefix="lpray-smoke-") as folder:
            yield Path(folder)
    else:
        yield default


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=float))
    print(f"wrote {path}")
    return path


def looped_video(source: Path, target: Path, times: int) -> Path:
    """``source`` played ``times`` times in a row, remuxed without re-encoding (PyAV), so a
    throughput figure is not dominated by per-video start-up on a 4-second clip."""
    import av

    if target.exists():
        return target
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream_in = src.streams.video[0]
        stream_out = dst.add_stream_from_template(stream_in)
        packets = [p for p in src.demux(stream_in) if p.dts is not None]
        span = (
            max(p.pts for p in packets)
            - min(p.pts for p in packets)
            + int(packets[-1].duration or 1)
        )
        for k in range(times):
            for packet in packets:  # shifted in place: pass k plays at k * span
                packet.pts += span if k else 0
                packet.dts += span if k else 0
                packet.stream = stream_out
                dst.mux(packet)
    return target
