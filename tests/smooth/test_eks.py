"""Tests of the Ensemble Kalman Smoother (lpray.smooth) and the ``lpray smooth`` command.

Truths used: the dense posterior of the same Gaussian model (np.linalg.solve / inv on the full
precision matrix), the dense multivariate-normal likelihood, recorded outputs of the reference
package ensemble-kalman-smoother 4.6.2 (tests/fixtures/eks_reference, see its README), and
synthetic ensembles with a known true trajectory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

from lpray.cli import main as cli_main
from lpray.commands.smooth import parse_windows
from lpray.io.tables import arrays_to_table, read_pose_csv, read_pose_parquet, write_pose_csv
from lpray.smooth import smooth_ensemble, smooth_ensemble_multiview
from lpray.smooth.api import view_groups_by_suffix
from lpray.smooth.fit import constant_observation_variance, fit_random_walk_s, frame_selection
from lpray.smooth.kalman import random_walk_nll, smooth_random_walks
from lpray.smooth.latent_kalman import latent_walk_nll, smooth_latent_walks

from conftest import SHARED_DATA

DATA = SHARED_DATA / "eks-examples"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eks_reference"
IBL = DATA / "ibl-pupil"
MIRROR = DATA / "mirror-mouse"
needs_ibl = pytest.mark.skipif(
    not IBL.is_dir(), reason=f"shared EKS example data not found at {IBL}"
)
needs_mirror = pytest.mark.skipif(
    not MIRROR.is_dir(), reason=f"shared EKS example data not found at {MIRROR}"
)
REF_LABELS = [
    "x",
    "y",
    "likelihood",
    "x_ens_median",
    "y_ens_median",
    "x_ens_var",
    "y_ens_var",
    "x_posterior_var",
    "y_posterior_var",
]


# ----------------------------------------------------------------------------------------------
# Independent truths


def dense_random_walk_posterior(y, r, s, p0):
    """Posterior mean and variance of z given y for one series, from the dense T x T precision."""
    n = len(y)
    observed = ~np.isnan(y)
    precision = np.zeros((n, n))
    precision[0, 0] += 1.0 / p0
    precision[observed, observed] += 1.0 / r[observed]
    for t in range(1, n):
        precision[t - 1, t - 1] += 1.0 / s
        precision[t, t] += 1.0 / s
        precision[t - 1, t] -= 1.0 / s
        precision[t, t - 1] -= 1.0 / s
    rhs = np.where(observed, np.nan_to_num(y) / r, 0.0)
    return np.linalg.solve(precision, rhs), np.diag(np.linalg.inv(precision))


def dense_latent_posterior(y, r, c, q, s, p0):
    """Same for a D-dim random walk observed through C: a dense (T*D) x (T*D) precision."""
    n, n_obs = y.shape
    dim = c.shape[1]
    precision = np.zeros((n * dim, n * dim))
    rhs = np.zeros(n * dim)
    precision[:dim, :dim] += np.linalg.inv(p0)
    step = np.linalg.inv(s * q)
    for t in range(n):
        block = slice(t * dim, (t + 1) * dim)
        seen = ~np.isnan(y[t])
        weights = np.diag(1.0 / r[t][seen])
        precision[block, block] += c[seen].T @ weights @ c[seen]
        rhs[block] = c[seen].T @ weights @ y[t][seen]
        if t:
            prev = slice((t - 1) * dim, t * dim)
            precision[prev, prev] += step
            precision[block, block] += step
            precision[prev, block] -= step
            precision[block, prev] -= step
    mean = np.linalg.solve(precision, rhs).reshape(n, dim)
    cov = np.linalg.inv(precision)
    covs = np.stack([cov[t * dim : (t + 1) * dim, t * dim : (t + 1) * dim] for t in range(n)])
    return mean, covs


def walk_covariance(n, s, p0):
    """Prior covariance of a scalar random walk: Cov(z_i, z_j) = p0 + s * min(i, j)."""
    idx = np.arange(n)
    return p0 + s * np.minimum.outer(idx, idx)


# ----------------------------------------------------------------------------------------------
# Synthetic ensembles


def member_tables(xy, likelihood, names, scorer="heatmap_tracker"):
    """Pose tables from ``(M, T, K, 2)`` members and ``(M, T, K)`` likelihoods."""
    return [arrays_to_table(xy[m], names, likelihood[m], scorer=scorer) for m in range(len(xy))]


def noisy_members(truth, rng, n_members=5, outlier_rate=0.03):
    """Members = truth + noise of varied scale per member + occasional large outliers."""
    scales = np.linspace(0.5, 2.5, n_members)
    noise = rng.normal(size=(n_members, *truth.shape)) * scales.reshape(-1, 1, 1, 1)
    outliers = rng.random((n_members, *truth.shape[:2], 1)) < outlier_rate
    jumps = rng.normal(scale=25.0, size=(n_members, *truth.shape))
    xy = truth[None] + noise + np.where(outliers, jumps, 0.0)
    likelihood = np.where(outliers[..., 0], 0.6, 0.95) + rng.uniform(-0.04, 0.04, size=xy.shape[:3])
    return xy, likelihood


# ----------------------------------------------------------------------------------------------
# (a) The smoother is the exact posterior of its model


def test_scalar_smoother_equals_dense_posterior_with_missing_frames():
    rng = np.random.default_rng(0)
    n_series, n_frames = 3, 80
    y = np.cumsum(rng.normal(size=(n_series, n_frames)), axis=1) + rng.normal(
        size=(n_series, n_frames)
    )
    r = rng.uniform(0.2, 5.0, size=y.shape)
    y[0, [0, 1, 40, 41, 42, 79]] = np.nan  # missing at both ends and a gap
    y[1, 10:30] = np.nan
    s = np.array([0.3, 2.0, 0.01])
    p0 = np.array([4.0, 1.0, 10.0])
    mean, var = smooth_random_walks(y, r, s, p0)
    for b in range(n_series):
        want_mean, want_var = dense_random_walk_posterior(y[b], r[b], s[b], p0[b])
        np.testing.assert_allclose(mean[b], want_mean, rtol=0, atol=1e-8)
        np.testing.assert_allclose(var[b], want_var, rtol=0, atol=1e-8)


def test_latent_smoother_equals_dense_posterior_with_missing_views():
    rng = np.random.default_rng(1)
    n_frames, n_obs, dim = 40, 4, 3
    c = rng.normal(size=(n_obs, dim))
    a = rng.normal(size=(dim, dim))
    q = a @ a.T + 0.1 * np.eye(dim)
    p0 = np.diag([3.0, 2.0, 1.0])
    y = rng.normal(size=(n_frames, n_obs)) * 3
    r = rng.uniform(0.3, 2.0, size=y.shape)
    y[5, :2] = np.nan  # one view missing
    y[20:23] = np.nan  # every view missing
    y[-1, 3] = np.nan
    mean, covs = smooth_latent_walks(y[None], r[None], c[None], q[None], np.array([0.7]), p0[None])
    want_mean, want_covs = dense_latent_posterior(y, r, c, q, 0.7, p0)
    np.testing.assert_allclose(mean[0], want_mean, rtol=0, atol=1e-8)
    np.testing.assert_allclose(covs[0], want_covs, rtol=0, atol=1e-8)


def test_nll_equals_dense_gaussian_log_density():
    rng = np.random.default_rng(2)
    n_frames, s, p0, r = 50, 0.4, 3.0, 1.5
    y = rng.normal(size=n_frames) * 2
    y[[3, 17, 18]] = np.nan
    seen = ~np.isnan(y)
    cov = walk_covariance(n_frames, s, p0)[np.ix_(seen, seen)] + r * np.eye(seen.sum())
    want = -multivariate_normal(np.zeros(seen.sum()), cov).logpdf(y[seen])
    got = random_walk_nll(y[None], r, s, p0)[0]
    assert got == pytest.approx(want, rel=1e-10)

    # The latent model's likelihood, against its dense covariance C Cov(z) C^T + R.
    n_frames, n_obs, dim = 25, 4, 3
    c = rng.normal(size=(n_obs, dim))
    q = np.diag([1.0, 0.5, 0.2])
    p0_latent = np.diag([2.0, 1.0, 0.5])
    y = rng.normal(size=(n_frames, n_obs))
    y[4, 1] = np.nan
    r_const = np.array([0.5, 1.0, 1.5, 2.0])
    idx = np.arange(n_frames)
    z_cov = np.kron(np.ones((n_frames, n_frames)), p0_latent) + 0.8 * np.kron(
        np.minimum.outer(idx, idx), q
    )
    big_c = np.kron(np.eye(n_frames), c)
    full = big_c @ z_cov @ big_c.T + np.diag(np.tile(r_const, n_frames))
    seen = ~np.isnan(y.reshape(-1))
    want = -multivariate_normal(np.zeros(seen.sum()), full[np.ix_(seen, seen)]).logpdf(
        y.reshape(-1)[seen]
    )
    got = latent_walk_nll(
        y[None], r_const[None], c[None], q[None], np.array([0.8]), p0_latent[None]
    )[0]
    assert got == pytest.approx(want, rel=1e-10)


def test_pipeline_skips_frames_every_member_missed():
    """Through the public API: all-missing frames are bridged, matching the dense posterior."""
    rng = np.random.default_rng(3)
    n_frames, s = 120, 0.5
    truth = np.cumsum(rng.normal(size=(n_frames, 1, 2)), axis=0) + 50.0
    xy, likelihood = noisy_members(truth, rng, outlier_rate=0.0)
    xy[:, 30:34] = np.nan  # every member misses these frames
    xy[:, 0] = np.nan  # and the first one
    tables = member_tables(xy, likelihood, ["nose"])
    out, params = smooth_ensemble(tables, smooth_param=s)
    assert params == {"nose": s}
    assert np.isfinite(out.to_numpy()[:, [0, 1, 7, 8]]).all()  # x, y, posterior vars

    # Independent recomputation of the model's inputs, then the dense posterior.
    conf = likelihood.mean(axis=0)[:, 0]
    for axis, coord in enumerate("xy"):
        members = xy[:, :, 0, axis]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN frames
            centre = np.nanmedian(members, axis=0)
            r = np.nanvar(members, axis=0) / conf
        mu = np.nanmean(centre)
        p0 = np.nanvar(centre - mu)
        want_mean, want_var = dense_random_walk_posterior(centre - mu, r, s, p0)
        np.testing.assert_allclose(
            out["ensemble-kalman_tracker", "nose", coord], want_mean + mu, atol=1e-8
        )
        np.testing.assert_allclose(
            out["ensemble-kalman_tracker", "nose", f"{coord}_posterior_var"], want_var, atol=1e-8
        )


# ----------------------------------------------------------------------------------------------
# (b) Agreement with the reference package's recorded outputs


def part(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """One keypoint's columns, indexed by coordinate name."""
    return table.xs(name, axis=1, level=1).droplevel(0, axis=1)


def read_members(folder: Path) -> list[pd.DataFrame]:
    return [read_pose_csv(p) for p in sorted(folder.glob("*.csv"))]


@needs_ibl
def test_matches_reference_on_ibl_pupil_fixed_s():
    """Reference ran in JAX float32: ~1e-5 px differences are its rounding, so the tolerance is
    1e-4 px on positions (10x the largest difference seen) and 3e-4 relative on variances."""
    ref = np.load(FIXTURES / "ibl_pupil.npz")
    assert list(ref["labels"]) == REF_LABELS
    names = [str(n) for n in ref["keypoints"]]
    table, params = smooth_ensemble(read_members(IBL), smooth_param=float(ref["fixed_s"]))
    assert set(params.values()) == {float(ref["fixed_s"])}
    assert list(table.columns) == [
        ("ensemble-kalman_tracker", k, lab) for k in names for lab in REF_LABELS
    ]
    got = table.to_numpy().reshape(len(table), len(names), len(REF_LABELS))
    want = ref["fixed"].astype(float)
    positions = [0, 1, 3, 4]  # x, y, x_ens_median, y_ens_median
    np.testing.assert_allclose(got[..., positions], want[..., positions], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got[..., 2], want[..., 2], rtol=0, atol=1e-6)  # likelihood
    np.testing.assert_allclose(got[..., 5:], want[..., 5:], rtol=3e-4, atol=1e-9)


@needs_mirror
def test_multiview_matches_reference_on_mirror_mouse_fixed_s():
    """Same float32 argument; the PCA and Q are recomputed in float64, so 2e-3 px. The reference
    adds the ensemble variance to its multi-view posterior variance; lpray does not (same as the
    single view), so it is added back before comparing (float32 rounding: 1e-3 relative plus
    1e-4 px^2 for the smallest variances)."""
    ref = np.load(FIXTURES / "mirror_mouse.npz")
    names = [str(n) for n in ref["keypoints"]]
    groups = view_groups_by_suffix(names, ["top", "bot"])
    assert [g[0][: -len("_top")] for g in groups] == [str(b) for b in ref["bodyparts"]]
    table, params = smooth_ensemble_multiview(
        read_members(MIRROR), groups, smooth_param=float(ref["fixed_s"])
    )
    cols = lambda coord: [("ensemble-kalman_tracker", k, coord) for k in names]  # noqa: E731
    for i, coord in enumerate(["x", "y"]):
        np.testing.assert_allclose(table[cols(coord)], ref["fixed"][..., i], rtol=0, atol=2e-3)
        total = table[cols(f"{coord}_posterior_var")].to_numpy() + table[cols(f"{coord}_ens_var")]
        np.testing.assert_allclose(total, ref["fixed"][..., 2 + i], rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# (c) The automatic smoothing parameter is the likelihood's minimiser


def fit_objective(table_members, keypoint, s):
    """The fit's objective recomputed from scratch: x + y filter NLL, constant median noise."""
    xy = np.stack(
        [[part(t, keypoint)[c].to_numpy() for c in "xy"] for t in table_members]
    )  # (M, 2, T)
    conf = np.mean([part(t, keypoint)["likelihood"] for t in table_members], axis=0)
    centre = np.median(xy, axis=0)
    r = xy.var(axis=0) / conf
    centred = centre - centre.mean(axis=1, keepdims=True)
    return random_walk_nll(
        centred, constant_observation_variance(centred, r), s, centred.var(axis=1)
    ).sum()


@needs_ibl
def test_automatic_s_minimises_the_likelihood_objective():
    members = read_members(IBL)
    _, params = smooth_ensemble(members)
    ref_auto = np.load(FIXTURES / "ibl_pupil.npz")["auto_s"]
    for (name, s_star), s_ref in zip(params.items(), ref_auto):
        best = fit_objective(members, name, s_star)
        assert best < fit_objective(members, name, s_star / 2)
        assert best < fit_objective(members, name, s_star * 2)
        assert best < fit_objective(members, name, s_star * 1.01)
        assert best < fit_objective(members, name, s_star / 1.01)
        # The reference stops Adam early on a loose tolerance: close, never better.
        assert best <= fit_objective(members, name, s_ref) + 1e-9
        assert abs(np.log(s_star / s_ref)) < 0.2, (name, s_star, s_ref)


def test_fitted_s_recovers_the_true_process_variance():
    rng = np.random.default_rng(4)
    n_frames, s_true, r_true = 20000, 0.5, 2.0
    z = np.cumsum(rng.normal(scale=np.sqrt(s_true), size=(3, 2, n_frames)), axis=-1)
    y = z + rng.normal(scale=np.sqrt(r_true), size=z.shape)
    y -= y.mean(axis=-1, keepdims=True)
    s_hat = fit_random_walk_s(y, np.full(y.shape, r_true), y.var(axis=-1))
    np.testing.assert_allclose(s_hat, s_true, rtol=0.1)
    # A fit window uses only its frames: fitting on the first half agrees with the full fit.
    half = fit_random_walk_s(y, np.full(y.shape, r_true), y.var(axis=-1), np.arange(10000))
    np.testing.assert_allclose(half, s_true, rtol=0.15)


# ----------------------------------------------------------------------------------------------
# (d) The command line, end to end


@needs_ibl
def test_cli_smooths_ibl_pupil(tmp_path, capsys):
    ref = np.load(FIXTURES / "ibl_pupil.npz")
    out = tmp_path / "smoothed" / "pupil.csv"
    files = [str(p) for p in sorted(IBL.glob("*.csv"))]
    code = cli_main(["smooth", *files, "--out", str(out), "--smooth-param", str(ref["fixed_s"])])
    assert code == 0
    table = read_pose_csv(out)
    names = [str(n) for n in ref["keypoints"]]
    got = table.to_numpy().reshape(len(table), len(names), len(REF_LABELS))
    np.testing.assert_allclose(got[..., :2], ref["fixed"][..., :2], rtol=0, atol=1e-4)
    parquet = read_pose_parquet(out.with_suffix(".parquet"))
    np.testing.assert_allclose(parquet.to_numpy(), table.to_numpy(), rtol=1e-12)
    assert list(parquet.columns) == list(table.columns)
    assert not list(out.parent.glob(".*tmp"))  # atomic write left no temporary file

    # Automatic parameter: the printed values are the API's.
    capsys.readouterr()
    assert cli_main(["smooth", str(IBL / "*.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    _, params = smooth_ensemble(read_members(IBL))
    for name, value in params.items():
        assert f"{name}: {value:.6g}" in printed


@needs_mirror
def test_cli_multiview_on_mirror_mouse(tmp_path):
    ref = np.load(FIXTURES / "mirror_mouse.npz")
    out = tmp_path / "mirror.csv"
    argv = [
        "smooth",
        str(MIRROR / "*.csv"),
        "--out",
        str(out),
        "--views",
        "top,bot",
        "--smooth-param",
        str(ref["fixed_s"]),
    ]
    assert cli_main(argv) == 0
    table = read_pose_csv(out)
    names = [str(n) for n in ref["keypoints"]]
    xs = table[[("ensemble-kalman_tracker", k, "x") for k in names]].to_numpy()
    np.testing.assert_allclose(xs, ref["fixed"][..., 0], atol=2e-3)


# ----------------------------------------------------------------------------------------------
# (e) Bad input


@pytest.fixture
def small_members(tmp_path):
    rng = np.random.default_rng(5)
    truth = np.cumsum(rng.normal(size=(50, 2, 2)), axis=0)
    xy, likelihood = noisy_members(truth, rng, n_members=3)
    paths = []
    for m, table in enumerate(member_tables(xy, likelihood, ["nose", "tail"])):
        path = tmp_path / f"vid.rng={m}.csv"
        write_pose_csv(table, path)
        paths.append(path)
    return paths


def run_cli(argv, capsys):
    code = cli_main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def test_cli_names_member_with_other_frame_count(small_members, tmp_path, capsys):
    short = read_pose_csv(small_members[1]).iloc[:40]
    write_pose_csv(short, small_members[1])
    code, err = run_cli(
        ["smooth", *map(str, small_members), "--out", str(tmp_path / "o.csv")], capsys
    )
    assert code == 2
    assert str(small_members[1]) in err and "40 frames" in err
    assert not (tmp_path / "o.csv").exists()


def test_cli_names_member_missing_a_keypoint(small_members, tmp_path, capsys):
    table = read_pose_csv(small_members[2])
    write_pose_csv(table.drop(columns="tail", level=1), small_members[2])
    code, err = run_cli(
        ["smooth", *map(str, small_members), "--out", str(tmp_path / "o.csv")], capsys
    )
    assert code == 2
    assert str(small_members[2]) in err and "tail" in err


def test_cli_names_malformed_csv(small_members, tmp_path, capsys):
    small_members[0].write_text("this is,not\na pose,table\n")
    code, err = run_cli(
        ["smooth", *map(str, small_members), "--out", str(tmp_path / "o.csv")], capsys
    )
    assert code == 2
    assert str(small_members[0]) in err


def test_cli_names_member_without_likelihood(small_members, tmp_path, capsys):
    table = read_pose_csv(small_members[1])
    write_pose_csv(table.drop(columns="likelihood", level=2), small_members[1])
    code, err = run_cli(
        ["smooth", *map(str, small_members), "--out", str(tmp_path / "o.csv")], capsys
    )
    assert code == 2
    assert str(small_members[1]) in err and "likelihood" in err


def test_keypoint_missing_everywhere_gives_nan_and_a_warning(small_members, tmp_path, capsys):
    tables = [read_pose_csv(p) for p in small_members]
    for table in tables:
        table.loc[:, (slice(None), "tail", ["x", "y"])] = np.nan
    with pytest.warns(UserWarning, match="tail"):
        out, params = smooth_ensemble(tables, smooth_param=None)
    assert np.isnan(params["tail"]) and np.isfinite(params["nose"])
    assert part(out, "tail")[["x", "y"]].isna().all().all()
    assert np.isfinite(part(out, "nose")[["x", "y"]].to_numpy()).all()
    # The CLI reports it on stderr and still writes the output.
    for table, path in zip(tables, small_members):
        write_pose_csv(table, path)
    code, err = run_cli(
        ["smooth", *map(str, small_members), "--out", str(tmp_path / "o.csv")], capsys
    )
    assert code == 0 and "warning" in err and "tail" in err
    assert (tmp_path / "o.csv").exists()


def test_bad_parameters_are_refused(small_members, tmp_path, capsys):
    tables = [read_pose_csv(p) for p in small_members]
    with pytest.raises(ValueError, match="ears"):
        smooth_ensemble(tables, smooth_param={"ears": 1.0})
    with pytest.raises(ValueError, match="positive"):
        smooth_ensemble(tables, smooth_param=-1.0)
    with pytest.raises(ValueError, match="outside"):
        smooth_ensemble(tables, fit_frames=[(10, 500)])
    with pytest.raises(ValueError, match="at least one"):
        smooth_ensemble([])
    with pytest.raises(ValueError, match="unknown"):
        smooth_ensemble_multiview(tables, [["nose", "paw"]])
    with pytest.raises(ValueError, match="no keypoint"):
        view_groups_by_suffix(["nose", "tail"], ["top", "bot"])
    code, err = run_cli(
        [
            "smooth",
            *map(str, small_members),
            "--out",
            str(tmp_path / "o.csv"),
            "--fit-frames",
            "ten:20",
        ],
        capsys,
    )
    assert code == 2 and "--fit-frames" in err


def test_fit_window_parsing_and_selection():
    assert parse_windows("0:500,1000:") == [(0, 500), (1000, None)]
    assert parse_windows(None) is None
    np.testing.assert_array_equal(frame_selection(10, [(None, 2), (7, None)]), [0, 1, 7, 8, 9])
    with pytest.raises(ValueError, match="overlap"):
        frame_selection(10, [(0, 5), (4, 8)])


def test_given_and_fitted_parameters_mix(small_members):
    tables = [read_pose_csv(p) for p in small_members]
    _, params = smooth_ensemble(tables, smooth_param={"nose": 3.0})
    assert params["nose"] == 3.0 and params["tail"] != 3.0 and np.isfinite(params["tail"])


# ----------------------------------------------------------------------------------------------
# (f) Multi-view smoothing beats the members' median on data with a known truth


def two_view_truth(rng, n_frames):
    """A 3-D random walk seen in a top view (x, y) and a mirror bottom view (x, z), per paw.

    Steps (0.5 px) are smaller than the members' noise (0.5-2.5 px), as in real video at a high
    frame rate: the regime where smoothing pays.
    """
    latent = np.cumsum(rng.normal(scale=0.5, size=(n_frames, 2, 3)), axis=0)
    top = latent[..., [0, 1]] + np.array([100.0, 80.0])
    bottom = latent[..., [0, 2]] * np.array([1.0, -1.0]) + np.array([100.0, 300.0])
    return np.concatenate([top, bottom], axis=1)  # keypoints: a_top, b_top, a_bot, b_bot


def test_multiview_beats_member_median_on_synthetic_two_view_data():
    rng = np.random.default_rng(6)
    truth = two_view_truth(rng, 1500)
    xy, likelihood = noisy_members(truth, rng, outlier_rate=0.05)
    names = ["a_top", "b_top", "a_bot", "b_bot"]
    tables = member_tables(xy, likelihood, names)
    groups = view_groups_by_suffix(names, ["top", "bot"])
    assert groups == [["a_top", "a_bot"], ["b_top", "b_bot"]]
    table, params = smooth_ensemble_multiview(tables, groups)
    assert params["a_top"] == params["a_bot"]
    smoothed = np.stack([part(table, k)[["x", "y"]].to_numpy() for k in names], 1)
    single, _ = smooth_ensemble(tables)
    single_xy = np.stack([part(single, k)[["x", "y"]].to_numpy() for k in names], 1)

    def rmse(estimate):
        return float(np.sqrt(np.mean((estimate - truth) ** 2)))

    median = rmse(np.median(xy, axis=0))
    multi = rmse(smoothed)
    assert multi < 0.8 * median, (multi, median)
    assert multi < rmse(single_xy), (multi, rmse(single_xy))  # the views share information
    assert list(table.columns) == [
        ("ensemble-kalman_tracker", k, lab) for k in names for lab in REF_LABELS
    ]


def test_multiview_smooths_ungrouped_keypoints_one_view_at_a_time():
    rng = np.random.default_rng(7)
    truth = two_view_truth(rng, 300)
    xy, likelihood = noisy_members(truth, rng)
    names = ["a_top", "b_top", "a_bot", "obstacle"]  # b_bot renamed: b has one view only
    tables = member_tables(xy, likelihood, names)
    table, params = smooth_ensemble_multiview(tables, [["a_top", "a_bot"]], smooth_param=2.0)
    single, _ = smooth_ensemble(tables, smooth_param=2.0, keypoints=["b_top", "obstacle"])
    for name in ["b_top", "obstacle"]:
        pd.testing.assert_frame_equal(part(table, name), part(single, name))
    assert params == dict.fromkeys(names, 2.0)
