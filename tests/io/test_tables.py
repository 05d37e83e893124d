"""Pose tables: the 3-row-header CSV and parquet round trips, and malformed files."""

from __future__ import annotations

import numpy as np
import pytest

from lpray.io.tables import (
    PoseTableError,
    arrays_to_table,
    keypoint_names,
    read_pose_csv,
    read_pose_parquet,
    table_to_arrays,
    write_pose_csv,
    write_pose_parquet,
)


def example_arrays(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    xy = rng.uniform(0, 400, size=(6, 3, 2))
    xy[2, 1] = np.nan
    return xy, rng.uniform(size=(6, 3))


def test_csv_round_trip_keeps_values_names_and_layout(tmp_path):
    xy, likelihood = example_arrays(np.random.default_rng(0))
    names = ["nose", "paw_L", "tail"]
    table = arrays_to_table(
        xy, names, likelihood, index=[f"labeled-data/img{i:02d}.png" for i in range(6)]
    )
    write_pose_csv(table, tmp_path / "p.csv")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0].startswith("scorer,lpray") and lines[1].startswith("bodyparts,nose,nose,nose")
    assert lines[2].startswith("coords,x,y,likelihood")
    assert lines[5].split(",")[4:6] == ["", ""]  # the NaN keypoint is an empty cell
    back = read_pose_csv(tmp_path / "p.csv")
    assert keypoint_names(back) == names
    xy_back, lk_back = table_to_arrays(back)
    np.testing.assert_allclose(xy_back, xy, equal_nan=True)
    np.testing.assert_allclose(lk_back, likelihood)
    assert list(back.index) == list(table.index)


def test_parquet_round_trip(tmp_path):
    xy, likelihood = example_arrays(np.random.default_rng(1))
    table = arrays_to_table(
        xy, ["a", "b", "c"], likelihood, scorer="ens", extra={"x_var": np.ones((6, 3))}
    )
    write_pose_parquet(table, tmp_path / "p.parquet")
    back = read_pose_parquet(tmp_path / "p.parquet")
    assert list(back.columns) == list(table.columns)
    np.testing.assert_allclose(back.to_numpy(), table.to_numpy(), equal_nan=True)


def test_reads_lightning_pose_files_from_shared_data():
    from conftest import SHARED_DATA, require_shared

    folder = require_shared(SHARED_DATA / "eks-examples" / "ibl-pupil")
    table = read_pose_csv(sorted(folder.glob("*.csv"))[0])
    xy, likelihood = table_to_arrays(table)
    assert xy.shape == (2000, 4, 2) and likelihood.shape == (2000, 4)
    assert keypoint_names(table)[0] == "pupil_top_r"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n", "3-row-header"),
        ("scorer,s,s\nbodyparts,nose,nose\ncoords,u,v\nimg.png,1,2\n", "coords x and y"),
        ("scorer,s,s\nbodyparts,nose,nose\ncoords,x,y\nimg.png,1,abc\n", "non-numbers"),
    ],
)
def test_malformed_csv_names_the_file(tmp_path, content, message):
    path = tmp_path / "Broken.csv"
    path.write_text(content)
    with pytest.raises(PoseTableError, match=rf"Broken\.csv.*{message}"):
        read_pose_csv(path)
