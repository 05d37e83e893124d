"""Output formats: one registry of names; each format holds the table it was given (DLC's h5
layout read back by pandas, NWB read back by pynwb), locally and on an object store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lpray.io.formats import (
    DEFAULT_FORMATS,
    FormatError,
    PoseMeta,
    list_formats,
    parse_formats,
    save_pose,
)
from lpray.io.tables import arrays_to_table, read_pose_csv, read_pose_parquet, table_to_arrays

NAMES = ["nose", "ear_l", "tail"]


def table(n: int = 25, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (n, len(NAMES), 2))
    return arrays_to_table(xy, NAMES, rng.uniform(0, 1, (n, len(NAMES))), scorer="member-0")


def test_the_registry_is_the_one_list_of_names():
    assert list_formats() == ["csv", "parquet", "h5", "nwb"]
    assert set(DEFAULT_FORMATS) <= set(list_formats())
    assert parse_formats("h5, csv,h5") == ("h5", "csv")
    with pytest.raises(FormatError, match="unknown output format 'hdf5'.*csv, parquet, h5, nwb"):
        parse_formats("csv,hdf5")
    with pytest.raises(FormatError, match="no output format"):
        parse_formats(" , ")


def test_the_help_and_the_cli_start_up_read_the_registry():
    import subprocess
    import sys

    from lpray.io.formats import get_format

    done = subprocess.run(
        [sys.executable, "-m", "lpray", "predict", "--help"], capture_output=True, text=True
    )
    flat = " ".join(done.stdout.split())  # argparse wraps the help
    for name in list_formats():
        assert f"{name} = {' '.join(get_format(name).description.split())}" in flat, name
    # reading the registry imports no format's writer packages (the CLI builds it at start-up)
    code = "import sys, lpray.cli\nlpray.cli.build_parser()\nassert 'pandas' not in sys.modules, 'pandas imported'\n"
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr[-1000:]


def test_every_format_holds_the_table(tmp_path):
    expected = table()
    paths = save_pose(expected, str(tmp_path / "v"), list_formats(), PoseMeta("v.mp4", 30.0))
    assert [p.rsplit(".", 1)[1] for p in paths] == ["csv", "parquet", "h5", "nwb"]
    pd.testing.assert_frame_equal(read_pose_csv(paths[0]), expected, check_index_type=False)
    parquet = read_pose_parquet(paths[1])
    pd.testing.assert_frame_equal(parquet, expected, check_index_type=False, check_names=False)
    # DeepLabCut reads its analysis files as pd.read_hdf(path, "df_with_missing")
    h5 = pd.read_hdf(paths[2], "df_with_missing")
    assert list(h5.columns.names) == ["scorer", "bodyparts", "coords"]
    pd.testing.assert_frame_equal(h5, expected)
    from pynwb import NWBHDF5IO

    xy, likelihood = table_to_arrays(expected)
    with NWBHDF5IO(paths[3], "r") as io:
        estimation = io.read().processing["behavior"]["PoseEstimation"]
        assert list(estimation.skeleton.nodes[:]) == NAMES
        assert list(estimation.source_video.external_file[:]) == ["v.mp4"]
        for k, name in enumerate(NAMES):
            series = estimation.pose_estimation_series[name]
            np.testing.assert_array_equal(series.data[:], xy[:, k])
            np.testing.assert_array_equal(series.confidence[:], likelihood[:, k])
            assert series.rate == 30.0 and series.unit == "pixels"


def test_nwb_says_when_its_timestamps_count_frames(tmp_path, caplog):
    """No frame rate known (EKS of files with no video): rate 1/s, and the file says so."""
    from pynwb import NWBHDF5IO

    from lpray.io.formats.nwb import UNKNOWN_RATE

    unknown, known = (
        save_pose(table(), str(tmp_path / name), ["nwb"], PoseMeta(fps=fps))[0]
        for name, fps in (("unknown", None), ("known", 25.0))
    )
    assert "frame rate unknown" in caplog.text and "unknown.nwb" in caplog.text
    for path, rate, comments in ((unknown, 1.0, UNKNOWN_RATE), (known, 25.0, "no comments")):
        with NWBHDF5IO(path, "r") as io:
            estimation = io.read().processing["behavior"]["PoseEstimation"]
            for series in estimation.pose_estimation_series.values():
                assert series.rate == rate and series.comments == comments


def test_binary_formats_reach_an_object_store(s3, tmp_path):
    expected = table(seed=1)
    url = "s3://lpray-test/formats/v"
    paths = save_pose(expected, url, ["h5", "nwb"], PoseMeta(fps=25.0))
    assert paths == [f"{url}.h5", f"{url}.nwb"]
    s3.get(f"{url}.h5".removeprefix("s3://"), str(tmp_path / "v.h5"))
    pd.testing.assert_frame_equal(pd.read_hdf(tmp_path / "v.h5", "df_with_missing"), expected)
