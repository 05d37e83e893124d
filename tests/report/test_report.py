"""The HTML report: structure, self-containment, escaping, and how a real browser renders it."""

from __future__ import annotations

import base64
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from lpray.report.html import PNG_SIGNATURE, ReportSections, render_report, write_report  # noqa: E402

SECTIONS = ("sweep", "ensemble", "tracking", "samples")
EVIL = "<script>alert('x')</script> & \"quotes\""
CHROMIUM = Path("/usr/bin/chromium")


class ReportParser(HTMLParser):
    """Collects what the tests check: sections, their h2s, table rows, images, text, tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.in_h2 = False
        self.in_tbody = False
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href", "action", "poster"):
            if attr.get(key):
                self.urls.append(str(attr[key]))
        if tag == "section":
            self.current = attr.get("id")
            self.sections[self.current] = {"h2": "", "rows": [], "images": 0, "text": []}
        elif tag == "h2":
            self.in_h2 = True
        elif tag == "tbody":
            self.in_tbody = True
            if self.current:
                self.sections[self.current]["rows"].append(0)
        elif tag == "tr" and self.in_tbody and self.current:
            self.sections[self.current]["rows"][-1] += 1
        elif tag == "img":
            self.images.append(str(attr.get("src")))
            if self.current:
                self.sections[self.current]["images"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.current = None
        elif tag == "h2":
            self.in_h2 = False
        elif tag == "tbody":
            self.in_tbody = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.current:
            self.sections[self.current]["text"].append(data)
            if self.in_h2:
                self.sections[self.current]["h2"] += data


def parse(page: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(page)
    parser.close()
    return parser


def make_png(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(4, 2.5), dpi=60)
    ax.plot(np.cumsum(rng.normal(size=50)), color="tab:blue")
    ax.set_title(f"figure {seed}")
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


@pytest.fixture(scope="module")
def sections(tmp_path_factory: pytest.TempPathFactory) -> ReportSections:
    folder = tmp_path_factory.mktemp("figs")
    sweep = pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(5)],
            "losses.temporal.weight": [0.0, 1e-4, 1e-3, 1e-2, 1e-1],
            "train_frames": [75, 75, 150, 150, 150],
            "final_val_pixel_error": [6.12, 5.3, 4.91, np.nan, 7.4],
            "best_val_pixel_error": [5.9, 5.1, 4.72, np.nan, 7.01],
            "time_s": [61.2, 63.0, 120.4, 3.1, 118.0],
            "status": ["TERMINATED", "TERMINATED", "TERMINATED", "ERROR", "TERMINATED"],
        }
    )
    members = pd.DataFrame(
        {
            "seed": [0, 1, 2],
            "val_pixel_error": [4.8, 4.6, 5.0],
            "test_pixel_error": [5.2, 4.9, 5.4],
            "train_time_s": [300.5, 298.1, 310.0],
        }
    )
    comparison = pd.DataFrame(
        {"test_pixel_error": [5.17, 4.9, 4.61, 4.22]},
        index=pd.Index(["mean member", "best member", "ensemble mean", "EKS"], name="model"),
    )
    tracking = pd.DataFrame(
        {
            "video": ["a.mp4", "b.mp4", "c.mp4", "d <b>.mp4"],
            "status": ["ok", "ok", "failed", "ok"],
            "frames": [1200, 1500, 0, 900],
            "mean_confidence": [0.93, 0.88, np.nan, 0.91],
            "mean_posterior_variance": [0.41, 0.52, np.nan, 0.47],
            "seconds": [12.5, 14.1, 0.2, 9.9],
            "error": ["", "", EVIL, None],
        }
    )
    return ReportSections(
        title="lpray report <test>",
        run_info={"config": "experiments/pipeline_synthetic.yaml", "storage": "s3://b/lpray"},
        sweep_trials=sweep.assign(setting=["supervised (baseline)", *["semi: temporal"] * 4]),
        sweep_plots=[make_png(folder / "sweep.png", 1)],
        sweep_warnings=[
            "trial t4: losses.temporal.weight = 0.1, but its logged temporal loss was 0"
        ],
        headline={"EKS video error (px)": 4.22},
        ensemble_members=members,
        ensemble_comparison=comparison,
        ensemble_plots=[make_png(folder / "ensemble.png", 2)],
        tracking_videos=tracking,
        sample_frames=[make_png(folder / "sample0.png", 3), make_png(folder / "sample1.png", 4)],
    )


@pytest.fixture(scope="module")
def report(sections: ReportSections, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    path = write_report(run_dir, sections)
    assert path == run_dir / "report.html"
    return Path(path)


def test_every_section_has_its_heading_and_rows(report: Path) -> None:
    parsed = parse(report.read_text())
    assert list(parsed.sections) == list(SECTIONS)
    for sid in SECTIONS:
        assert parsed.sections[sid]["h2"].strip().lower() == sid
    assert parsed.sections["sweep"]["rows"] == [5]
    assert parsed.sections["ensemble"]["rows"] == [3, 4]
    assert parsed.sections["tracking"]["rows"] == [4]
    assert parsed.sections["samples"]["rows"] == []
    images = {sid: parsed.sections[sid]["images"] for sid in SECTIONS}
    assert images == {"sweep": 1, "ensemble": 1, "tracking": 0, "samples": 2}


def test_sweep_is_sorted_best_first_and_marks_the_best(report: Path) -> None:
    page = report.read_text()
    sweep = page[page.index('<section id="sweep">') : page.index('<section id="ensemble">')]
    order = [sweep.index(f"<td>t{i}</td>") for i in (2, 1, 0, 4, 3)]
    assert order == sorted(order), "trials should run from lowest best error, NaN last"
    assert sweep.count('<tr class="best">') == 1
    best = sweep[sweep.index('<tr class="best">') :]
    assert best.index("<td>t2</td>") < best.index("</tr>")
    assert '<td class="status-bad">ERROR</td>' in sweep


def test_numbers_keep_their_column_precision_and_integer_type(report: Path) -> None:
    page = report.read_text()
    ensemble = page[page.index('<section id="ensemble">') : page.index('<section id="tracking">')]
    tracking = page[page.index('<section id="tracking">') : page.index('<section id="samples">')]
    assert '<td class="num">2</td>' in ensemble and "2.00" not in ensemble  # seeds stay ints
    assert '<td class="num">0.20</td>' in tracking  # seconds: 2 decimals like 12.50
    assert '<td class="num">0.93</td>' in tracking


def test_report_can_go_to_a_bucket(sections: ReportSections) -> None:
    """Object-store URLs (s3://, gs://) go through fsspec; memory:// stands in for them."""
    import fsspec

    where = write_report("memory://lpray-test/run", sections)
    assert where == "memory://lpray-test/run/report.html"
    with fsspec.open(where, "rt") as handle:
        assert list(parse(handle.read()).sections) == list(SECTIONS)


def test_images_are_embedded_pngs_identical_to_the_files(
    report: Path, sections: ReportSections
) -> None:
    parsed = parse(report.read_text())
    files = [*sections.sweep_plots, *sections.ensemble_plots, *sections.sample_frames]
    assert len(parsed.images) == len(files)
    for src, file in zip(parsed.images, files):
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        assert data == Path(file).read_bytes()


def test_page_is_self_contained(report: Path) -> None:
    parsed = parse(report.read_text())
    assert "script" not in parsed.tags and "link" not in parsed.tags
    external = [u for u in parsed.urls if not u.startswith(("#", "data:image/png;base64,"))]
    assert external == []
    assert "@import" not in report.read_text() and "url(" not in report.read_text()


def test_error_text_is_escaped_and_shown(report: Path) -> None:
    page = report.read_text()
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    parsed = parse(page)
    tracking_text = "".join(parsed.sections["tracking"]["text"])
    assert EVIL in tracking_text  # the reader sees the error exactly as raised
    assert "d <b>.mp4" in tracking_text and "<b>" not in parsed.tags
    assert "lpray report <test>" in "".join(parsed.text)
    assert "3 of 4 videos tracked" in tracking_text


def test_missing_sections_say_not_run(tmp_path: Path) -> None:
    path = Path(write_report(tmp_path, ReportSections()))
    parsed = parse(path.read_text())
    assert list(parsed.sections) == list(SECTIONS)
    for sid in SECTIONS:
        info = parsed.sections[sid]
        assert info["rows"] == [] and info["images"] == 0
        assert "Not run." in "".join(info["text"])


def test_missing_or_bad_images_become_notes(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a.png"
    bogus.write_text("hello")
    page = render_report(
        ReportSections(sample_frames=[tmp_path / "gone.png", bogus], tracking_videos=pd.DataFrame())
    )
    parsed = parse(page)
    samples = "".join(parsed.sections["samples"]["text"])
    assert parsed.images == []
    assert "Missing figure gone.png" in samples and "Not a PNG, left out: not-a.png" in samples
    assert "Not run." in "".join(parsed.sections["tracking"]["text"])


# ---------------------------------------------------------------- a real browser


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def console_errors(stderr: str) -> list[str]:
    """Page-level problems Chromium logs: uncaught errors and resources it failed to load."""
    markers = ("Uncaught", "Failed to load resource", "Refused to", "net::ERR_")
    return [line for line in stderr.splitlines() if any(m in line for m in markers)]


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)
def test_chromium_renders_every_section_and_a_screenshot(report: Path, tmp_path: Path) -> None:
    url = report.resolve().as_uri()
    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = parse(dom.stdout)
    assert list(parsed.sections) == list(SECTIONS)
    assert parsed.sections["tracking"]["rows"] == [4]
    assert len(parsed.images) == 4
    assert "Settings to fix" in "".join(parsed.sections["sweep"]["text"])
    assert console_errors(dom.stderr) == []

    shot = tmp_path / "report.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1800", url)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1800, 1280)
    assert pixels.std() > 5, "the screenshot is blank"
    assert console_errors(run.stderr) == []


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_chromium_console_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><p>x</p><script>throw new Error("boom")</script>')
    run = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert any("boom" in line for line in console_errors(run.stderr))


# ---------------------------------------------------------------- why a number is what it is


def test_loss_activity_marks_the_baseline_shares_and_never_active_losses() -> None:
    from lpray.report.losses import SUPERVISED_SETTING, loss_activity

    trials = pd.DataFrame(
        {
            "trial_id": ["sup", "t", "dead", "tp"],
            "losses.temporal.weight": [0.0, 0.01, 0.01, 0.01],
            "losses.pca_multiview.weight": [0.0, 0.0, 0.0, 0.01],
        }
    )
    rows = []
    for trial, temporal, pca in (("sup", 0, 0), ("t", 2.0, 0), ("dead", 0.0, 0), ("tp", 1.0, 3.0)):
        for epoch in range(2):
            w_t, w_p = 0.01 * temporal, 0.01 * pca
            rows.append(
                {
                    "trial_id": trial,
                    "epoch": epoch,
                    "train/supervised": 0.5,
                    "train/temporal": temporal if trial != "sup" else np.nan,
                    "train/temporal_weighted": w_t if trial != "sup" else np.nan,
                    "train/pca_multiview": pca if trial == "tp" else np.nan,
                    "train/pca_multiview_weighted": w_p if trial == "tp" else np.nan,
                    "train/total": 0.5 + w_t + w_p,
                }
            )
    activity, warnings = loss_activity(trials, pd.DataFrame(rows))
    assert activity.loc["sup", "setting"] == SUPERVISED_SETTING
    assert activity.loc["tp", "setting"] == "semi: temporal+pca_multiview"
    assert activity.loc["sup", "unsupervised_share_%"] == 0
    assert activity.loc["t", "temporal_share_%"] == pytest.approx(100 * 0.02 / 0.52)
    expected = 100 * (0.01 + 0.03) / 0.54
    assert activity.loc["tp", "unsupervised_share_%"] == pytest.approx(expected)
    assert len(warnings) == 1 and "trial dead" in warnings[0]
    assert "losses.temporal.epsilon" in warnings[0]
    # Without a supervised trial the report says that nothing shows what the losses add.
    _, warnings = loss_activity(trials.iloc[1:], pd.DataFrame(rows))
    assert any("no trial is supervised" in w for w in warnings)


def test_sweep_warnings_and_baseline_are_rendered(sections: ReportSections) -> None:
    from dataclasses import replace

    page = render_report(replace(sections, sweep_warnings=["trial t1: <never> acted"]))
    sweep = page[page.index('<section id="sweep">') : page.index('<section id="ensemble">')]
    assert "Settings to fix" in sweep and "trial t1: &lt;never&gt; acted" in sweep
    marked = sweep[sweep.index('class="baseline"') :]
    assert "<td>t0</td>" in marked[: marked.index("</tr>")]
    assert sweep.count('class="baseline"') == 1
    assert "settings to fix" in page[: page.index("<main>")]  # counted at a glance


def test_truth_error_is_the_mean_over_visible_keypoints(tmp_path: Path) -> None:
    from lpray.report.truth import VideoTruth, pixel_error

    xy = np.zeros((3, 2, 2))
    visible = np.array([[True, True], [True, False], [True, True]])
    truth = VideoTruth("v", "v.mp4", xy, visible, ("a", "b"))
    predicted = xy.copy()
    predicted[:, 0, 0] = 3.0  # a: 3 px off on every frame
    predicted[:, 1] = [[0, 4], [100, 100], [0, 4]]  # b: 4 px off where visible, far where hidden
    assert pixel_error(predicted, ["a", "b"], truth) == pytest.approx((3 * 3 + 2 * 4) / 5)
    # keypoints are matched by name, not position; unknown names are ignored
    assert pixel_error(predicted[:, ::-1], ["b", "a"], truth) == pytest.approx(17 / 5)
    with pytest.raises(ValueError, match="frames"):
        pixel_error(predicted[:2], ["a", "b"], truth)
