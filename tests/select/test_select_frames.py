"""``lpray select-frames`` and ``lpray merge-labels``.

The tracked corpora here are written by tracking's own EKS task (:func:`smooth_video`) from
member predictions made of the synthetic truth plus noise, with large, known disagreements at
chosen frames, so the tests know which frames a good selection must find. The videos are the
tiny synthetic project's, decoded for real; the URL test runs against the real S3 server.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lpray import cli
from lpray.data.labeled import LabeledDataset, context_paths, read_labeled_frames
from lpray.data.synthetic import load_synthetic_project, load_truth
from lpray.data.video import PyAVReader
from lpray.io.tables import arrays_to_table, read_pose_csv, table_to_arrays, write_pose_csv
from lpray.projects import dlc
from lpray.select import picking
from lpray.select.extraction import GUESS_SCORER
from lpray.select.merge import MergeError, merge_labels
from lpray.select.run import (
    SelectionOutputError,
    SelectSettings,
    SelectSettingsError,
    select_frames,
)
from lpray.track.manifest import VideoJob
from lpray.track.tasks import TrackSettings, smooth_video

MEMBERS = ["member-0", "member-1", "member-2"]
CHROMIUM = Path("/usr/bin/chromium")


def track_outputs(
    project: Path, out: str, disagree: dict[str, list[int]], video_root: str | None = None
) -> dict[str, np.ndarray]:
    """A tracked corpus of the project's videos: members = truth + 0.3 px noise, except at the
    ``disagree`` frames, where the members put keypoint 1 up to 12 px apart. Returns the truth."""
    synthetic = load_synthetic_project(project)
    rng = np.random.default_rng(0)
    truths = {}
    for video in [*synthetic.train_videos, *synthetic.test_videos]:
        key = video.stem
        truth, _ = load_truth(synthetic.truth_paths[key])
        xy = truth[None] + rng.normal(0, 0.3, (3, *truth.shape))
        for t in disagree.get(key, []):
            xy[:, t, 1] += np.array([[-6.0, 4.0], [0.0, -7.0], [6.0, 3.0]])
        confidence = np.full(xy.shape[:3], 0.9)
        segment = {
            "xy": xy,
            "confidence": confidence,
            "start": 0,
            "stop": len(truth),
            "keypoints": synthetic.keypoint_names,
            "seconds": 0.0,
            "decode_passes": 1,
            "parts": 1,
            "first_chunk_at": 0.0,
            "worker_created_at": 0.0,
            "worker_ready_at": 0.0,
            "node_id": "test",
        }
        path = str(video) if video_root is None else f"{video_root}/{video.name}"
        settings = TrackSettings(overlay="none", members=MEMBERS, smooth_param=1.0)
        smooth_video(VideoJob(key, path, out), settings, segment)
        truths[key] = truth
    return truths


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


DISAGREE = {"train00": [8, 27], "train01": [13, 33], "test00": [5, 21]}


@pytest.fixture(scope="module")
def tracked(tiny_project, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracked") / "tracks"
    truths = track_outputs(tiny_project, str(out), DISAGREE)
    return out, truths


@pytest.fixture(scope="module")
def selection(tracked, tmp_path_factory):
    """The default selection: 6 picks, gap 5, k-means over 3 candidates per pick."""
    out = tmp_path_factory.mktemp("sel") / "labels"
    result = select_frames(str(tracked[0]), str(out), SelectSettings(n=6, min_gap=5))
    return out, result


def test_scoring_picks_the_frames_where_the_members_disagree(tracked, tmp_path):
    result = select_frames(
        str(tracked[0]), str(tmp_path / "l"), SelectSettings(n=6, min_gap=5, pool_factor=1)
    )
    picked = {(p.key, p.frame) for p in result.picks}
    assert picked == {(k, t) for k, frames in DISAGREE.items() for t in frames}
    for pick in result.picks:  # the spread is the planted one (7.0 px), named as the reason
        assert 6.5 < pick.signals["ensemble_std"] < 7.5
        assert pick.reasons[0]["keypoint"] == result.keypoints[1]
    table = pd.read_csv(tmp_path / "l" / "selection.csv")
    assert list(table["rank"]) == list(range(1, 7)) and table["why"].str.contains("spread").all()


def test_min_gap_and_the_spread_over_videos_hold(tiny_project, tmp_path):
    """All disagreement in one video, on consecutive frames: picks stay 6 frames apart and
    every video gets its share."""
    out = tmp_path / "tracks"
    track_outputs(tiny_project, str(out), {"train00": list(range(10, 20))})
    result = select_frames(str(out), str(tmp_path / "l"), SelectSettings(n=7, min_gap=6))
    counts = result.videos
    assert sorted(counts.values()) == [2, 2, 3] and sum(counts.values()) == 7
    for key in counts:
        frames = sorted(p.frame for p in result.picks if p.key == key)
        assert np.diff(frames).min() >= 6, (key, frames)
    busy = [p.frame for p in result.picks if p.key == "train00"]
    assert sum(10 <= t < 20 for t in busy) == 2  # the most the gap allows in 10 frames


def test_pngs_are_the_decoded_frames_and_the_stub_round_trips(selection, tracked):
    out, result = selection
    assert len(result.picks) == 6
    by_key = {}
    for pick in result.picks:
        by_key.setdefault(pick.video, []).append(pick)
    for video, picks in by_key.items():
        with PyAVReader(video) as reader:
            for pick in picks:
                png = np.asarray(Image.open(out / pick.image).convert("RGB"))
                np.testing.assert_array_equal(png, reader.read(pick.frame, 1)[0])
    labels = read_labeled_frames(out)  # lpray's own loader reads the stub as a project
    stub = read_pose_csv(out / "CollectedData.csv")
    assert set(stub.columns.get_level_values(0)) == {GUESS_SCORER}
    assert sorted(labels.image_paths) == sorted(p.image for p in result.picks)
    for image, xy in zip(labels.image_paths, labels.keypoints):
        key, frame = image.split("/")[1], int(image.rsplit("img", 1)[1][:8])
        eks, _ = table_to_arrays(read_pose_csv(tracked[0] / key / f"{key}.eks.csv"))
        np.testing.assert_allclose(xy, eks[frame], atol=1e-6)
        assert np.abs(xy - tracked[1][key][frame]).max() < 10  # the guess is near the truth


def test_diversity_keeps_one_of_each_look():
    """Top scores all in one look: k-means still picks one frame of each of the 3 looks."""
    rng = np.random.default_rng(1)
    looks = rng.normal(0, 1, (3, 64))
    group = np.repeat(np.arange(3), 4)
    thumbs = looks[group] + rng.normal(0, 0.01, (12, 64))
    scores = np.where(group == 0, 10.0, 1.0) + np.arange(12) * 0.01
    chosen = picking.diverse(scores, thumbs, 3)
    assert sorted(group[chosen]) == [0, 1, 2]
    assert picking.suppress(np.array([5, 4, 3, 2, 1.0]), 2, 5).tolist() == [0, 2, 4]
    assert picking.shares([100, 100, 50], 5, [0, 1, 0]) == [2, 2, 1]
    assert picking.rebalance([3, 3], [1, 10]) == [1, 5]


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def test_page_shows_every_pick_with_its_reasons(selection, tmp_path):
    import base64

    out, result = selection
    page = _Page()
    page.feed((out / "selection.html").read_text())
    assert len(page.images) == len(result.picks)
    for src in page.images:
        header, data = src.split(",", 1)
        assert header == "data:image/png;base64"
        Image.open(__import__("io").BytesIO(base64.b64decode(data))).verify()
    text = " ".join(page.text)
    assert "ensemble spread" in text and "% of its video's frames" in text
    for pick in result.picks:
        assert pick.image in text
    if CHROMIUM.exists():  # a real browser renders it without errors
        run = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
             f"--user-data-dir={tmp_path / 'profile'}", (out / "selection.html").as_uri()],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0 and run.stdout.count("<figure>") == len(result.picks)


def test_existing_output_is_refused_and_left_byte_identical(selection, tracked, capsys):
    out, _ = selection
    before = tree_digest(out)
    with pytest.raises(SelectionOutputError, match="CollectedData.csv exists"):
        select_frames(str(tracked[0]), str(out), SelectSettings(n=2))
    code = cli.main(["select-frames", str(tracked[0]), "--n", "2", "--out", str(out)])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert tree_digest(out) == before
    code = cli.main(["select-frames", str(out), "--n", "2", "--out", str(out) + "-x"])
    assert code == 2 and "no finished video" in capsys.readouterr().err


def _project_copy(tiny_project: Path, folder: Path, without: list[str]) -> Path:
    """The tiny project's images and labels, less the rows of ``without`` (its files stay, as
    context frames do)."""
    shutil.copytree(tiny_project / "labeled-data", folder / "labeled-data")
    labels = read_pose_csv(tiny_project / "CollectedData.csv")
    write_pose_csv(labels.drop(index=[i for i in without if i in labels.index]),
                   folder / "CollectedData.csv")  # fmt: skip
    return folder


def _corrected(selection_dir: Path, target: Path, truths: dict[str, np.ndarray]) -> Path:
    """A labeler's result: the selection's folder, its CSV with the truth and a new scorer."""
    shutil.copytree(selection_dir, target)
    stub = read_pose_csv(target / "CollectedData.csv")
    xy = np.stack(
        [truths[i.split("/")[1]][int(i.rsplit("img", 1)[1][:8])] for i in stub.index.astype(str)]
    )
    names = list(dict.fromkeys(stub.columns.get_level_values(1)))
    write_pose_csv(arrays_to_table(xy, names, index=list(stub.index), scorer="alice"),
                   target / "CollectedData.csv")  # fmt: skip
    return target


def test_merge_refuses_bad_rows_leaving_the_project_identical_and_dedups(
    selection, tracked, tiny_project, tmp_path, capsys
):
    out, result = selection
    project = _project_copy(tiny_project, tmp_path / "project", [p.image for p in result.picks])
    before = tree_digest(project)
    n_before = len(read_labeled_frames(project))

    with pytest.raises(MergeError, match="still the ensemble's guesses"):
        merge_labels(project, out)
    new = _corrected(out, tmp_path / "new", tracked[1])
    first = result.picks[0].image
    (new / first).rename(new / "moved.png")
    with pytest.raises(MergeError, match=f"row {first}: image .* not found"):
        merge_labels(project, new)
    (new / "moved.png").rename(new / first)
    table = read_pose_csv(new / "CollectedData.csv")
    renamed = table.rename(columns={table.columns[0][1]: "whisker"}, level=1)
    write_pose_csv(renamed, tmp_path / "unknown.csv")
    shutil.copytree(new / "labeled-data", tmp_path / "labeled-data")
    code = cli.main(["merge-labels", str(project), str(tmp_path / "unknown.csv")])
    assert code == 2 and "whisker" in capsys.readouterr().err
    assert tree_digest(project) == before  # every refusal wrote nothing

    merged = merge_labels(project, new)
    assert sorted(merged.added) == sorted(p.image for p in result.picks)
    labels = read_labeled_frames(project)
    assert len(labels) == n_before + len(result.picks)
    for pick in result.picks:
        row = labels.image_paths.index(pick.image)
        np.testing.assert_allclose(labels.keypoints[row], tracked[1][pick.key][pick.frame])
        # a frame the project already had (a context frame here) keeps the project's file
        kept = (tiny_project / pick.image).is_file()
        source = tiny_project if kept else new
        assert (project / pick.image).read_bytes() == (source / pick.image).read_bytes()

    after = tree_digest(project)
    again = merge_labels(project, new)  # the same frames again: nothing added, nothing changed
    assert again.added == [] and len(again.unchanged) == len(result.picks)
    assert tree_digest(project) == after

    changed = read_pose_csv(new / "CollectedData.csv") + 1.0
    write_pose_csv(changed, new / "CollectedData.csv")
    kept = merge_labels(project, new)
    assert len(kept.duplicates) == len(result.picks) and tree_digest(project) == after
    replaced = merge_labels(project, new, replace=True)
    assert len(replaced.replaced) == len(result.picks)
    labels = read_labeled_frames(project)
    assert len(labels) == n_before + len(result.picks)
    row = labels.image_paths.index(first)
    pick = result.picks[0]
    np.testing.assert_allclose(labels.keypoints[row], tracked[1][pick.key][pick.frame] + 1.0)


@pytest.mark.slow
def test_select_frames_reads_and_writes_s3(s3, tiny_project, tmp_path, capsys):
    """Tracks, videos and the labeling folder all in the bucket (the real S3 server)."""
    synthetic = load_synthetic_project(tiny_project)
    for video in [*synthetic.train_videos, *synthetic.test_videos]:
        s3.put(str(video), f"lpray-test/select/videos/{video.name}")
    tracks = "s3://lpray-test/select/tracks"
    track_outputs(tiny_project, tracks, DISAGREE, video_root="s3://lpray-test/select/videos")
    out = "s3://lpray-test/select/labels"
    code = cli.main(["select-frames", tracks, "--n", "3", "--min-gap", "5", "--out", out])
    assert code == 0, capsys.readouterr().err
    s3.invalidate_cache()
    stored = s3.find("lpray-test/select/labels")
    assert sum(p.endswith(".png") for p in stored) == 3
    record = json.loads(s3.cat("lpray-test/select/labels/selection.json"))
    assert len(record["picks"]) == 3
    videos = {v.stem: v for v in [*synthetic.train_videos, *synthetic.test_videos]}
    for pick in record["picks"]:
        assert pick["frame"] in DISAGREE[pick["video"]]
        local = tmp_path / "png"
        s3.get(f"lpray-test/select/labels/{pick['image']}", str(local))
        with PyAVReader(str(videos[pick["video"]])) as reader:
            frame = reader.read(pick["frame"], 1)[0]
        np.testing.assert_array_equal(np.asarray(Image.open(local).convert("RGB")), frame)


def test_weights_and_settings_are_checked_by_name():
    from lpray.select.scoring import ScoreWeights

    assert ScoreWeights.parse("ensemble_std=2,low_confidence=0").low_confidence == 0
    with pytest.raises(ValueError, match="SIGNAL one of"):
        ScoreWeights.parse("spread=1")
    with pytest.raises(ValueError, match="at least one score weight"):
        ScoreWeights(0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="--min-gap"):
        SelectSettings(n=3, min_gap=0)
    with pytest.raises(SelectSettingsError, match="--context-frames must be >= 0"):
        SelectSettings(n=3, context_frames=-1)
    with pytest.raises(SelectSettingsError, match="--dlc-scorer"):
        SelectSettings(n=3, dlc_scorer="a/b")


def _frame_of(image: str) -> int:
    return int(image.rsplit("img", 1)[1][:8])


def test_dlc_per_video_stubs_read_back_by_pandas_and_lpray_convert(selection, tracked, tmp_path):
    """Each video's folder holds DeepLabCut's CollectedData_<scorer>.h5 and .csv: rows keyed
    (labeled-data, video, image), (scorer, bodyparts, coords) columns, the EKS guess."""
    out, result = selection
    picks: dict[str, list[int]] = {}
    for pick in result.picks:
        picks.setdefault(pick.key, []).append(pick.frame)
    assert sorted(p.name for p in (out / "labeled-data").glob("*/CollectedData_*")) == sorted(
        f"CollectedData_{GUESS_SCORER}{suffix}" for _ in picks for suffix in (".h5", ".csv")
    )
    for key, frames in picks.items():
        h5 = out / "labeled-data" / key / f"CollectedData_{GUESS_SCORER}.h5"
        table = pd.read_hdf(h5)  # as DeepLabCut's GUI reads it: the file's one key
        pd.testing.assert_frame_equal(pd.read_hdf(h5, "df_with_missing"), table)
        assert list(table.columns.names) == ["scorer", "bodyparts", "coords"]
        assert set(table.columns.get_level_values(0)) == {GUESS_SCORER}
        assert list(dict.fromkeys(table.columns.get_level_values(1))) == result.keypoints
        assert set(table.columns.get_level_values(2)) == {"x", "y"}
        assert sorted(table.index) == sorted(
            ("labeled-data", key, f"img{t:08d}.png") for t in frames
        )
        eks, _ = table_to_arrays(read_pose_csv(tracked[0] / key / f"{key}.eks.csv"))
        xy, _ = table_to_arrays(table)
        np.testing.assert_allclose(xy, eks[[_frame_of(i[2]) for i in table.index]], atol=1e-6)
        csv = pd.read_csv(h5.with_suffix(".csv"), header=[0, 1, 2], index_col=[0, 1, 2])
        assert list(csv.index) == list(table.index)
        np.testing.assert_allclose(csv.to_numpy(), table.to_numpy(), atol=1e-9)

    # lpray convert's DeepLabCut reader, on a DLC project made of the folders (h5, then csv)
    project = tmp_path / "dlc"
    shutil.copytree(out / "labeled-data", project / "labeled-data")
    config = {"scorer": GUESS_SCORER, "bodyparts": result.keypoints, "video_sets": {}}
    (project / "config.yaml").write_text(__import__("yaml").safe_dump(config))
    for _ in range(2):
        labels, _, _ = dlc.SOURCE.load(project)
        assert [n.name for n in labels.skeletons[0].nodes] == result.keypoints
        assert len(labels.labeled_frames) == len(result.picks)
        for frame in labels.labeled_frames:
            image = Path(frame.video.filename[frame.frame_idx])
            key = image.parent.name
            eks, _ = table_to_arrays(read_pose_csv(tracked[0] / key / f"{key}.eks.csv"))
            xy = frame.instances[0].numpy()
            np.testing.assert_allclose(xy, eks[_frame_of(image.name)], atol=1e-6)
        for h5 in project.glob("labeled-data/*/*.h5"):
            h5.unlink()  # the second pass reads the CSVs


def _dlc_relabel(h5: Path, truths: dict[str, np.ndarray], keep: set[str], scorer: str) -> Path:
    """DeepLabCut's labeler on one video's file: every row but ``keep`` moved to the truth,
    saved as ``CollectedData_<scorer>.h5`` and ``.csv`` in the same folder."""
    table = pd.read_hdf(h5)
    for key in table.index:
        if "/".join(key) not in keep:
            truth = truths[key[1]][_frame_of(key[2])]
            table.loc[[key], :] = truth.reshape(1, -1)
    table.columns = table.columns.set_levels([scorer], level=0)
    target = h5.with_name(f"CollectedData_{scorer}.h5")
    table.to_hdf(target, key="df_with_missing", mode="w")
    table.to_csv(target.with_suffix(".csv"))
    return target


def test_merge_takes_the_corrections_made_in_deeplabcuts_per_video_files(
    selection, tracked, tiny_project, tmp_path
):
    """A DeepLabCut labeler corrects the per-video files (one video in place, one saved under
    their own scorer beside the untouched guess) and leaves one row at the guess: the merge adds
    the corrected rows with the corrected labels, leaves the guess row out (or, with
    accept_guesses, merges it), and refuses a row edited differently in the CSV too."""
    out, result = selection
    assert (out / "eks_guess.csv").is_file()
    images = [p.image for p in result.picks]
    new = tmp_path / "new"
    shutil.copytree(out, new)
    videos = sorted({p.key for p in result.picks})
    assert len(videos) >= 2
    untouched = images[0]
    first, second = (
        new / "labeled-data" / v / f"CollectedData_{GUESS_SCORER}.h5" for v in videos[:2]
    )
    _dlc_relabel(first, tracked[1], {untouched}, GUESS_SCORER)  # edited in place
    _dlc_relabel(second, tracked[1], {untouched}, "bob")  # saved beside the guess
    truth = {i: tracked[1][i.split("/")[1]][_frame_of(i)] for i in images}
    edited = [i for i in images if i != untouched and i.split("/")[1] in videos[:2]]
    project = _project_copy(tiny_project, tmp_path / "project", images)
    before = tree_digest(project)

    # the CSV edits one of those rows to other labels: refused, nothing written
    csv = read_pose_csv(new / "CollectedData.csv")
    conflicting = csv.copy()
    conflicting.columns = conflicting.columns.set_levels(["alice"], level=0)
    conflicting.loc[edited[0]] = truth[edited[0]].ravel() + 2.0
    write_pose_csv(conflicting, new / "CollectedData.csv")
    with pytest.raises(MergeError, match=f"row {edited[0]} was labeled differently"):
        merge_labels(project, new)
    assert tree_digest(project) == before
    write_pose_csv(csv, new / "CollectedData.csv")  # back to the guess
    # two per-video files of one video disagree on a row: refused, naming both files
    other = pd.read_hdf(first) + 3.0
    other.columns = other.columns.set_levels(["carol"], level=0)
    carol = first.with_name("CollectedData_carol.h5")
    other.to_hdf(carol, key="df_with_missing", mode="w")
    with pytest.raises(MergeError, match="row .* labeled differently in") as refused:
        merge_labels(project, new)
    assert carol.name in str(refused.value) and first.name in str(refused.value)
    assert tree_digest(project) == before
    carol.unlink()

    merged = merge_labels(project, new)
    assert sorted(merged.added) == sorted(edited)
    assert untouched in merged.guesses
    labels = read_labeled_frames(project)
    for image in edited:
        np.testing.assert_allclose(
            labels.keypoints[labels.image_paths.index(image)], truth[image], atol=1e-6
        )
    assert untouched not in labels.image_paths

    everything = merge_labels(project, new, accept_guesses=True)
    assert untouched in everything.added and everything.guesses == []


EDGES = {"train00": [3, 20], "train01": [10, 39], "test00": [1, 38]}


@pytest.fixture(scope="module")
def edge_selection(tiny_project, tmp_path_factory):
    """Picks at and near both ends of the videos, with 2 context frames and scorer alice."""
    folder = tmp_path_factory.mktemp("edges")
    truths = track_outputs(tiny_project, str(folder / "tracks"), EDGES)
    settings = SelectSettings(n=6, min_gap=5, pool_factor=1, context_frames=2, dlc_scorer="alice")
    result = select_frames(str(folder / "tracks"), str(folder / "labels"), settings)
    return folder / "labels", result, truths


def test_context_frames_are_the_decoded_neighbours_clamped_at_the_edges(edge_selection):
    out, result, _ = edge_selection
    picked: dict[str, list[int]] = {}
    for pick in result.picks:
        picked.setdefault(pick.key, []).append(pick.frame)
    assert {1, 38} <= set(picked["test00"]) and 39 in picked["train01"]  # near and at the ends
    stub = read_pose_csv(out / "CollectedData.csv")  # rows: the picks only
    assert sorted(stub.index) == sorted(p.image for p in result.picks)
    for key in picked:
        assert (out / "labeled-data" / key / "CollectedData_alice.h5").is_file()
    for key, frames in picked.items():
        wanted = {u for t in frames for u in range(t - 2, t + 3) if 0 <= u < 40}
        folder = out / "labeled-data" / key
        assert {_frame_of(p.name) for p in folder.glob("img*.png")} == wanted
        video = next(p.video for p in result.picks if p.key == key)
        with PyAVReader(video) as reader:
            for t in sorted(wanted):
                png = np.asarray(Image.open(folder / f"img{t:08d}.png").convert("RGB"))
                np.testing.assert_array_equal(png, reader.read(t, 1)[0])
    # lpray's context-model loader finds the neighbours by name (a missing one past the end of
    # the video is replaced by the frame itself)
    labels = read_labeled_frames(out)
    dataset = LabeledDataset(labels, (64, 64), context=2, defer_augment=True)
    for index, image in enumerate(labels.image_paths):
        raw = dataset[index]["raw"].numpy()
        for c, name in enumerate(context_paths(image, range(-2, 3))):
            source = out / name if (out / name).is_file() else out / image
            assert _frame_of(name) >= 40 or source == out / name
            np.testing.assert_array_equal(
                raw[c].transpose(1, 2, 0), np.asarray(Image.open(source).convert("RGB"))
            )
    record = json.loads((out / "selection.json").read_text())
    assert record["settings"]["context_frames"] == 2


def _stored(s3, prefix: str) -> dict[str, bytes]:
    s3.invalidate_cache()
    return {p: s3.cat(p) for p in s3.find(prefix)}


def test_merge_labels_on_urls_refusals_and_an_outage_leave_the_project_identical(
    s3, s3_server, edge_selection, tiny_project, tmp_path, capsys
):
    """PROJECT and NEW_LABELS in the bucket (the real S3 server): a refused merge and one whose
    store goes down at the CSV's upload leave every stored object as it was; with the store back
    the merge adds the rows, their images and their context frames."""
    out, result, truths = edge_selection
    images = sorted(p.image for p in result.picks)
    local_project = _project_copy(tiny_project, tmp_path / "project", images)
    new = _corrected(out, tmp_path / "new", truths)
    s3.put(str(local_project), "lpray-test/merge/project", recursive=True)
    s3.put(str(new), "lpray-test/merge/new", recursive=True)
    project, new_url = "s3://lpray-test/merge/project", "s3://lpray-test/merge/new"
    before = _stored(s3, "lpray-test/merge/project")
    assert "lpray-test/merge/project/CollectedData.csv" in before

    missing = f"lpray-test/merge/new/{images[0]}"
    s3.rm(missing)
    with pytest.raises(MergeError, match=f"row {images[0]}: image .* not found"):
        merge_labels(project, new_url)
    s3.put(str(new / images[0]), missing)
    assert _stored(s3, "lpray-test/merge/project") == before

    s3_server.stop_on(
        lambda method, where: (
            method in ("PUT", "POST") and where.endswith("/merge/project/CollectedData.csv")
        )
    )
    try:
        with pytest.raises(Exception):  # noqa: B017 - whatever the client raises for "refused"
            merge_labels(project, new_url + "/CollectedData.csv")
        assert s3_server.server is None  # it went down at the CSV's upload
    finally:
        s3_server.stop_on(None)
        if s3_server.server is None:
            s3_server.start()
    after = _stored(s3, "lpray-test/merge/project")
    for path, data in before.items():  # every object the project had is unchanged
        assert after[path] == data, path
    extra = sorted(set(after) - set(before))  # what the outage left behind: unreferenced images
    assert all(p.endswith(".png") for p in extra), extra

    assert cli.main(["merge-labels", project, new_url]) == 0, capsys.readouterr().err
    final = _stored(s3, "lpray-test/merge/project")
    merged = read_pose_csv(project + "/CollectedData.csv")
    assert len(merged) == len(read_pose_csv(local_project / "CollectedData.csv")) + len(images)
    xy, _ = table_to_arrays(merged.loc[images])
    for row, image in enumerate(images):
        key = image.split("/")[1]
        np.testing.assert_allclose(xy[row], truths[key][_frame_of(image)])
    context = []
    for image in images:
        for name in context_paths(image, range(-2, 3)):
            stored = f"lpray-test/merge/project/{name}"
            if (new / name).is_file():  # every neighbour select-frames extracted is there
                kept = before.get(stored)  # the project's own file of that frame stays
                assert final[stored] == (kept if kept is not None else (new / name).read_bytes())
                context += [name] if kept is None and name not in images else []
    assert context and "context frames copied" in capsys.readouterr().out
    again = merge_labels(project, new_url)  # nothing new: nothing written
    assert again.added == [] and again.context == []
    assert _stored(s3, "lpray-test/merge/project") == final
