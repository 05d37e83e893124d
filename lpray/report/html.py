"""One self-contained HTML page per pipeline run: sweep, ensemble, tracking, sample frames.

The page is a single file with its PNGs inlined as base64 data URIs, its CSS inline and no
script, so it can be mailed, attached to an issue or opened from a bucket without the run's
folder beside it, and it never reaches the network. Inputs are plain data (DataFrames, PNG
paths, dicts) so that any stage can fill its section and a stage that did not run shows a short
note instead of breaking the report.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd

from lpray.io.storage import atomic_write, is_local, join, local_path

REPORT_NAME = "report.html"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUM_CLASS = ' class="num"'

# Status words, lower-cased, that mean a trial or video finished / did not finish.
GOOD_STATUS = frozenset(
    {"ok", "done", "success", "succeeded", "completed", "terminated", "skipped"}
)
BAD_STATUS = frozenset({"error", "errored", "failed", "failure", "crashed", "timeout"})


@dataclass
class ReportSections:
    """What one pipeline run has to show; every part is optional.

    Expected columns (others are shown too, in their own order):
      sweep_trials: one row per Tune trial: its config values, ``train_frames`` (labels used),
        ``final_val_pixel_error``, ``best_val_pixel_error``, ``time_s``, ``status``.
      ensemble_members: one row per seed: ``seed``, ``val_pixel_error``, ``test_pixel_error``,
        ``train_time_s``.
      ensemble_comparison: rows such as "mean member", "best member", "ensemble mean", "EKS"
        against the same error columns.
      tracking_videos: one row per video: ``video``, ``status``, ``frames``, ``mean_confidence``,
        ``mean_posterior_variance``, ``seconds``, ``error`` (text of a failure, else empty).
    A ``setting`` column in sweep_trials whose value starts with "supervised" marks that row as
    the supervised baseline. ``sweep_warnings`` are settings the user must fix (shown in a box
    above the trials); ``sweep_notes`` explain the columns; ``headline`` adds cards to the
    numbers at a glance.
    """

    title: str = "lpray pipeline report"
    run_info: Mapping[str, Any] | None = None
    sweep_trials: pd.DataFrame | None = None
    sweep_plots: Sequence[str | Path] = field(default_factory=list)
    sweep_warnings: Sequence[str] = field(default_factory=list)
    sweep_notes: Sequence[str] = field(default_factory=list)
    headline: Mapping[str, Any] | None = None
    ensemble_notes: Sequence[str] = field(default_factory=list)
    ensemble_members: pd.DataFrame | None = None
    ensemble_comparison: pd.DataFrame | None = None
    ensemble_plots: Sequence[str | Path] = field(default_factory=list)
    tracking_videos: pd.DataFrame | None = None
    sample_frames: Sequence[str | Path] = field(default_factory=list)


def write_report(run_dir: str | Path, sections: ReportSections) -> str | Path:
    """Write ``report.html`` into ``run_dir`` (local or a bucket URL) and return its location.

    The location comes back in the form ``run_dir`` was given: a Path for local folders, the URL
    string for object stores. The write is atomic, so a reader never sees half a report.
    """
    target = join(run_dir, REPORT_NAME)
    page = render_report(sections)
    with atomic_write(target, "wb") as handle:
        handle.write(page.encode("utf-8"))
    return local_path(target) if is_local(target) else target


def render_report(sections: ReportSections) -> str:
    """The whole page as a string (what :func:`write_report` writes)."""
    parts = [
        _sweep_section(sections),
        _ensemble_section(sections),
        _tracking_section(sections),
        _samples_section(sections),
    ]
    nav = "".join(
        f'<a href="#{sid}">{_e(label)}</a>'
        for sid, label in (
            ("sweep", "Sweep"),
            ("ensemble", "Ensemble"),
            ("tracking", "Tracking"),
            ("samples", "Samples"),
        )
    )
    created = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(sections.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header>\n<h1>{_e(sections.title)}</h1>\n<p class="muted">written {_e(created)}</p>\n'
        f"{_run_info(sections.run_info)}{_glance(sections)}"
        f"<nav>{nav}</nav>\n</header>\n<main>\n"
        + "\n".join(parts)
        + "\n</main>\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------- sections


def _sweep_section(s: ReportSections) -> str:
    """Trials of the loss-weight / label-count sweep, best first, plus the sweep plots."""
    if _empty(s.sweep_trials) and not s.sweep_plots:
        return _not_run("sweep", "Sweep", "No sweep ran for this pipeline.")
    body = []
    if not _empty(s.sweep_trials):
        trials = _sort_by(s.sweep_trials, "best_val_pixel_error")
        body.append(
            f"<p>{len(trials)} trial{'s' if len(trials) != 1 else ''}; the best one (lowest "
            "validation pixel error) is highlighted"
            + ("; the supervised baseline is marked." if _baseline_rows(trials) else ".")
            + "</p>"
        )
    body.append(_warnings(s.sweep_warnings))
    if not _empty(s.sweep_trials):
        body.append(
            _table(
                trials,
                best_by="best_val_pixel_error",
                caption="Trials",
                marked=_baseline_rows(trials),
            )
        )
    body.extend(f'<p class="explain">{_e(note)}</p>' for note in s.sweep_notes)
    body.append(_figures(s.sweep_plots))
    return _section("sweep", "Sweep", body)


def _ensemble_section(s: ReportSections) -> str:
    """Per-seed members and how the ensemble (and EKS) compares with them."""
    if _empty(s.ensemble_members) and _empty(s.ensemble_comparison) and not s.ensemble_plots:
        return _not_run("ensemble", "Ensemble", "No seed ensemble was trained.")
    body = []
    if not _empty(s.ensemble_members):
        body.append(_table(s.ensemble_members, best_by="test_pixel_error", caption="Members"))
    if not _empty(s.ensemble_comparison):
        body.append(
            _table(s.ensemble_comparison, caption="Ensemble against its members", index=True)
        )
    body.extend(f'<p class="explain">{_e(note)}</p>' for note in s.ensemble_notes)
    body.append(_figures(s.ensemble_plots))
    return _section("ensemble", "Ensemble", body)


def _tracking_section(s: ReportSections) -> str:
    """Per-video results; failures listed below the table with their error text."""
    videos = s.tracking_videos
    if _empty(videos):
        return _not_run("tracking", "Tracking", "No videos were tracked.")
    assert videos is not None
    errors = videos["error"] if "error" in videos.columns else pd.Series("", index=videos.index)
    failed = videos[[_is_failure(st, er) for st, er in zip(_status_column(videos), errors)]]
    ok = len(videos) - len(failed)
    body = [
        f"<p>{ok} of {len(videos)} video{'s' if len(videos) != 1 else ''} tracked"
        + (f'; <strong class="bad">{len(failed)} failed</strong>.' if len(failed) else ".")
        + "</p>",
        _table(videos.drop(columns=["error"], errors="ignore"), caption="Videos"),
    ]
    if len(failed):
        items = []
        for i, row in failed.iterrows():
            name = row["video"] if "video" in failed.columns else i
            text = errors.loc[i]
            text = "" if _missing(text) else str(text)
            items.append(
                f"<details open><summary>{_e(name)}</summary>"
                f"<pre>{_e(text or 'no error text recorded')}</pre></details>"
            )
        body.append('<h3>Failures</h3>\n<div class="failures">' + "".join(items) + "</div>")
    return _section("tracking", "Tracking", body)


def _samples_section(s: ReportSections) -> str:
    if not s.sample_frames:
        return _not_run("samples", "Samples", "No sample frames were drawn.")
    return _section(
        "samples",
        "Samples",
        ["<p>Predicted keypoints on sample frames of the tracked videos.</p>"]
        + [_figures(s.sample_frames)],
    )


# ---------------------------------------------------------------------------- header parts


def _run_info(info: Mapping[str, Any] | None) -> str:
    if not info:
        return ""
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_fmt(v))}</dd>" for k, v in info.items())
    return f'<dl class="info">{rows}</dl>\n'


def _glance(s: ReportSections) -> str:
    """A few headline numbers, each only where its data exists."""
    cards: list[tuple[str, str]] = []
    if not _empty(s.sweep_trials):
        assert s.sweep_trials is not None
        cards.append(("sweep trials", str(len(s.sweep_trials))))
        best = _column_min(s.sweep_trials, "best_val_pixel_error")
        if best is not None:
            cards.append(("best val error (px)", _fmt(best)))
    if not _empty(s.ensemble_members):
        assert s.ensemble_members is not None
        cards.append(("ensemble members", str(len(s.ensemble_members))))
    if not _empty(s.tracking_videos):
        assert s.tracking_videos is not None
        videos = s.tracking_videos
        errors = videos["error"] if "error" in videos.columns else [""] * len(videos)
        bad = sum(_is_failure(st, er) for st, er in zip(_status_column(videos), errors))
        cards.append(("videos tracked", f"{len(videos) - bad} / {len(videos)}"))
    cards.extend((str(k), _fmt(v)) for k, v in (s.headline or {}).items())
    if s.sweep_warnings:
        cards.append(("settings to fix", str(len(s.sweep_warnings))))
    if not cards:
        return ""
    inner = "".join(
        f'<div class="card"><div class="value">{_e(v)}</div><div class="label">{_e(k)}</div></div>'
        for k, v in cards
    )
    return f'<div class="glance">{inner}</div>\n'


# ---------------------------------------------------------------------------- building blocks


def _section(sid: str, title: str, body: Iterable[str]) -> str:
    return (
        f'<section id="{sid}">\n<h2>{_e(title)}</h2>\n'
        + "\n".join(b for b in body if b)
        + "\n</section>"
    )


def _not_run(sid: str, title: str, note: str) -> str:
    return _section(sid, title, [f'<p class="note">Not run. {_e(note)}</p>'])


def _warnings(items: Sequence[str]) -> str:
    """Settings a user must fix before the numbers mean what they seem to (a yellow box)."""
    if not items:
        return ""
    rows = "".join(f"<li>{_e(item)}</li>" for item in items)
    return f'<div class="warn"><strong>Settings to fix</strong><ul>{rows}</ul></div>'


def _baseline_rows(frame: pd.DataFrame) -> set[int]:
    """Positions of the rows whose ``setting`` is the supervised baseline."""
    if "setting" not in frame.columns:
        return set()
    values = [str(v).lower() for v in frame["setting"]]
    return {i for i, v in enumerate(values) if v.startswith("supervised")}


def _table(
    frame: pd.DataFrame,
    *,
    caption: str,
    best_by: str | None = None,
    index: bool = False,
    marked: set[int] | None = None,
) -> str:
    """An HTML table; numbers right-aligned and rounded, statuses coloured, best row marked.

    ``marked``: row positions drawn as the baseline (class ``baseline``).
    """
    data = frame.reset_index() if index else frame.reset_index(drop=True)
    best_row = None
    if best_by and best_by in data.columns:
        values = pd.to_numeric(data[best_by], errors="coerce")
        if values.notna().any():
            best_row = int(values.idxmin())
    numeric = {c for c in data.columns if pd.api.types.is_numeric_dtype(data[c].dtype)}
    head = "".join(
        f'<th scope="col"{NUM_CLASS if c in numeric else ""}>{_e(_header(c))}</th>'
        for c in data.columns
    )
    # One precision per column so that a column's numbers line up (0.20 above 12.50, not 0.2).
    wide = {c: _column_is_wide(data[c]) for c in numeric}
    rows = []
    # Column by column, not iterrows(): a row Series would turn integer seeds into floats.
    for i, values in enumerate(zip(*(data[c] for c in data.columns))):
        cells = []
        for col, value in zip(data.columns, values):
            classes = []
            if _is_number(value):
                classes.append("num")
            if str(col).lower() == "status" and not _missing(value):
                classes.append(_status_class(value))
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}>{_e(_fmt(value, wide.get(col)))}</td>")
        names = (["best"] if i == best_row else []) + (["baseline"] if i in (marked or ()) else [])
        row_cls = f' class="{" ".join(names)}"' if names else ""
        rows.append(f"<tr{row_cls}>{''.join(cells)}</tr>")
    return (
        f'<div class="table-wrap"><table>\n<caption>{_e(caption)}</caption>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table></div>"
    )


def _figures(paths: Sequence[str | Path]) -> str:
    """Each PNG inlined; a missing or non-PNG file becomes a visible note, never an error."""
    if not paths:
        return ""
    out = []
    for path in paths:
        name = Path(str(path)).name
        try:
            data = _read_bytes(path)
        except OSError as error:
            out.append(f'<p class="note">Missing figure {_e(name)}: {_e(error)}</p>')
            continue
        if not data.startswith(PNG_SIGNATURE):
            out.append(f'<p class="note">Not a PNG, left out: {_e(name)}</p>')
            continue
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        out.append(
            f'<figure><img src="{uri}" alt="{_e(name)}"><figcaption>{_e(name)}</figcaption></figure>'
        )
    return '<div class="figures">' + "\n".join(out) + "</div>"


def _read_bytes(path: str | Path) -> bytes:
    if is_local(path):
        return local_path(path).read_bytes()
    with fsspec.open(str(path), "rb") as handle:
        return handle.read()


# ---------------------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    """Escape for HTML text and attribute values (quotes included)."""
    return html.escape(str(value), quote=True)


def _header(column: Any) -> str:
    return str(column).replace("_", " ")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _column_is_wide(column: pd.Series) -> bool:
    """True when a numeric column reaches 1 or more: its fractions then get 2 decimals."""
    values = pd.to_numeric(column, errors="coerce").abs()
    values = values[values.notna() & (values != float("inf"))]
    return bool(len(values)) and float(values.max()) >= 1


def _fmt(value: Any, wide: bool | None = None) -> str:
    """Numbers to a readable precision: 3 significant digits below 1, 2 decimals above.

    ``wide`` (a column's choice) forces 2 decimals for every fraction of that column.
    """
    if _missing(value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isinf(x):
            return "∞" if x > 0 else "-∞"
        if x == 0:
            return "0"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 1 or wide:
            return f"{x:.2f}"
        return f"{x:.3g}"
    return str(value)


def _status_column(frame: pd.DataFrame) -> list[Any]:
    for col in frame.columns:
        if str(col).lower() == "status":
            return list(frame[col])
    return [None] * len(frame)


def _status_class(value: Any) -> str:
    word = str(value).strip().lower()
    if word in GOOD_STATUS:
        return "status-ok"
    if word in BAD_STATUS:
        return "status-bad"
    return "status-other"


def _is_failure(status: Any, error: Any) -> bool:
    """A video failed if its status says so, or if it carries error text."""
    if not _missing(status) and str(status).strip().lower() in BAD_STATUS:
        return True
    return not _missing(error) and bool(str(error).strip())


def _empty(frame: pd.DataFrame | None) -> bool:
    return frame is None or len(frame) == 0


def _column_min(frame: pd.DataFrame, column: str) -> float | None:
    if column not in frame.columns:
        return None
    values = pd.to_numeric(frame[column], errors="coerce")
    return float(values.min()) if values.notna().any() else None


def _sort_by(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in frame.columns:
        return frame
    key = pd.to_numeric(frame[column], errors="coerce")
    return frame.assign(_key=key).sort_values("_key", na_position="last").drop(columns="_key")


CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #ffffff; --band: #f6f8fa;
  --accent: #0969da; --good: #1a7f37; --bad: #cf222e; --best: #fff8c5; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: var(--bg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header, main { max-width: 1200px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; border-bottom: 1px solid var(--line); }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 8px; }
.muted { color: var(--muted); margin: 0 0 12px; }
nav { display: flex; gap: 18px; padding: 10px 0 12px; }
nav a { color: var(--accent); text-decoration: none; font-weight: 600; }
nav a:hover { text-decoration: underline; }
dl.info { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0 0 12px;
  font-size: 14px; }
dl.info dt { color: var(--muted); }
dl.info dd { margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  overflow-wrap: anywhere; }
.glance { display: flex; flex-wrap: wrap; gap: 12px; margin: 4px 0 8px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; min-width: 140px;
  background: var(--band); }
.card .value { font-size: 20px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .label { color: var(--muted); font-size: 13px; }
section { padding: 24px 0 8px; }
.note { color: var(--muted); font-style: italic; }
.table-wrap { overflow-x: auto; margin: 8px 0 16px; border: 1px solid var(--line);
  border-radius: 8px; width: fit-content; max-width: 100%; min-width: min(100%, 560px); }
table { border-collapse: collapse; min-width: 100%; font-size: 14px; }
caption { text-align: left; font-weight: 600; padding: 8px 12px; background: var(--band);
  border-bottom: 1px solid var(--line); }
th, td { padding: 6px 12px; text-align: left; white-space: nowrap; }
th { background: var(--band); border-bottom: 1px solid var(--line); font-weight: 600; }
th.num { text-align: right; }
tbody tr:nth-child(even) { background: #fbfcfd; }
tbody tr:hover { background: #eef4fb; }
tr.best, tr.best:hover { background: var(--best); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.status-ok { color: var(--good); font-weight: 600; }
td.status-bad { color: var(--bad); font-weight: 600; }
td.status-other { color: var(--muted); }
.bad { color: var(--bad); }
tr.baseline td:first-child { border-left: 4px solid var(--muted); }
tr.baseline { font-style: italic; }
.warn { border: 1px solid #d4a72c; background: #fff8c5; border-radius: 8px; padding: 8px 14px;
  margin: 8px 0 12px; }
.warn ul { margin: 4px 0 0; padding-left: 20px; }
.explain { color: var(--muted); font-size: 14px; max-width: 900px; }
.failures details { border: 1px solid #f5c2c7; background: #fff5f5; border-radius: 8px;
  padding: 6px 12px; margin: 0 0 8px; }
.failures summary { font-weight: 600; cursor: pointer; }
.failures pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 6px 0 0; font-size: 13px;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 16px;
  margin: 8px 0 16px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px;
  background: var(--bg); }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 13px; text-align: center; margin-top: 4px; }
@media print { nav { display: none; } section { break-inside: avoid-page; } }
"""
