"""The DALI pipeline, the reader choice, the training clips and prediction chunks through both
readers (lpray.data.dali_pipeline, lpray.data.readers, lpray.data.clips, lpray.inference.chunks).
The numpy geometry and sharding they share are tested in test_geometry.py and test_sharding.py,
which run without DALI.

DALI runs on the CPU here (VP9 and MJPEG fixtures). Truths are independent of the code under
test: each fixture frame encodes its own index, the dot video's dot positions are known, and the
PyAV backend is compared against DALI. Decoder agreement: DALI's and FFmpeg's YUV->RGB
conversions differ by at most 1 grey level on these fixtures; the tests allow 2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpray.data.augment_spec import ClipAugmentSpec
from lpray.data.clip_augment import draw_clips
from lpray.data.clips import make_unlabeled_loader
from lpray.data.geometry import to_frame_matrix
from lpray.data.normalise import IMAGENET_MEAN, IMAGENET_STD
from lpray.data.readers import choose_backend
from lpray.data.sharding import augment_rng
from lpray.data.video import PyAVReader, VideoError, probe_video
from lpray.data.warp import warp_normalise
from lpray.inference.chunks import iter_prediction_chunks

import video_fixtures as vf

pytest.importorskip("nvidia.dali", reason="nvidia-dali-cuda120 is not installed")

NATIVE = (vf.HEIGHT, vf.WIDTH)  # model input = frame size: to_frame is the identity
GREY_TOLERANCE = 2.0
BACKENDS = ["pyav", "dali"]


def grey(frames: torch.Tensor) -> np.ndarray:
    """Undo the ImageNet normalisation of (..., 3, H, W) frames: grey levels of channel 0."""
    return (frames[..., 0, :, :] * IMAGENET_STD[0] + IMAGENET_MEAN[0]).numpy() * 255.0


def indices_shown(frames: torch.Tensor) -> list[int]:
    """The index each (N, 3, H, W) native-size frame encodes."""
    return [vf.frame_index_of(np.rint(g).clip(0, 255).astype(np.uint8)) for g in grey(frames)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("dali_videos")


@pytest.fixture(scope="module")
def vp9(folder) -> str:
    return vf.make_video(folder, "vp9", 37)


@pytest.fixture(scope="module")
def mjpeg(folder) -> str:
    return vf.make_video(folder, "mjpeg", 37)


@pytest.fixture(scope="module")
def vp9_pair(folder) -> list[str]:
    """Two VP9 videos; the second shows index + 100, so content tells the videos apart."""
    second = vf.write_video(
        folder / "offset.webm", "vp9", 30, draw=lambda i: vf.index_frame(i + 100)
    )
    return [vf.make_video(folder, "vp9", 37), second]


def test_backend_choice(vp9, mjpeg, folder):
    h264 = probe_video(vf.make_video(folder, "h264", 12))
    cpu_ok = [probe_video(vp9), probe_video(mjpeg)]
    assert choose_backend("auto", cpu_ok, "cpu") == "dali-cpu"
    assert choose_backend("auto", [*cpu_ok, h264], "cpu") == "pyav"
    assert choose_backend("pyav", cpu_ok, "cpu") == "pyav"
    assert choose_backend("dali", cpu_ok, "cpu") == "dali-cpu"
    with pytest.raises(VideoError, match="VP8, VP9 and MJPEG") as err:
        choose_backend("dali", [*cpu_ok, h264], "cpu")
    assert h264.path in str(err.value)
    with pytest.raises(ValueError, match="unknown video backend"):
        choose_backend("opencv", cpu_ok, "cpu")


# ---------------------------------------------------------------- prediction chunks


@pytest.mark.parametrize("codec", ["vp9", "mjpeg"])
def test_dali_cpu_frames_equal_pyav_frames(request, codec):
    path = request.getfixturevalue(codec)
    with PyAVReader(path) as reader:
        truth = reader.read(0, 37)[..., 0].astype(float)
    (dali,) = iter_prediction_chunks(path, NATIVE, chunk_size=37, backend="dali")
    got = grey(dali["frames"])
    assert dali["frame_index"].tolist() == list(range(37))
    assert np.abs(got - truth).max() <= GREY_TOLERANCE
    assert indices_shown(dali["frames"]) == list(range(37))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("chunk, context", [(10, 0), (10, 3), (8, 12), (50, 2)])
def test_prediction_chunks_cover_each_frame_once_with_edge_padding(vp9, backend, chunk, context):
    n = 37
    chunks = list(iter_prediction_chunks(vp9, NATIVE, chunk, context, backend=backend))
    assert len(chunks) == -(-n // chunk)
    valid = torch.cat([c["frame_index"][c["valid"]] for c in chunks])
    assert valid.tolist() == list(range(n))
    for k, c in enumerate(chunks):
        length = chunk + 2 * context
        assert c["frames"].shape == (length, 3, *NATIVE) and c["frames"].dtype == torch.float32
        assert c["frame_index"].dtype == torch.int64 and c["valid"].dtype == torch.bool
        expected = np.clip(np.arange(k * chunk - context, k * chunk + chunk + context), 0, n - 1)
        assert c["frame_index"].tolist() == expected.tolist()
        # the pixels show the frames the indices claim, edge repeats included
        assert indices_shown(c["frames"]) == expected.tolist()
        # every valid frame t has t - context .. t + context (edge-clamped) around it
        for row in np.flatnonzero(c["valid"].numpy()):
            t = int(c["frame_index"][row])
            around = c["frame_index"][row - context : row + context + 1].tolist()
            assert around == np.clip(np.arange(t - context, t + context + 1), 0, n - 1).tolist()
        assert torch.allclose(c["to_frame"], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))


def test_prediction_backends_agree_after_resize(mjpeg):
    size = (30, 41)  # anisotropic downscale
    pyav = list(iter_prediction_chunks(mjpeg, size, 16, 2, backend="pyav"))
    dali = list(iter_prediction_chunks(mjpeg, size, 16, 2, backend="dali"))
    for a, b in zip(pyav, dali, strict=True):
        assert torch.equal(a["frame_index"], b["frame_index"])
        assert np.abs(grey(a["frames"]) - grey(b["frames"])).max() <= GREY_TOLERANCE
    assert torch.allclose(pyav[0]["to_frame"], dali[0]["to_frame"])


def test_loaders_validate_videos_up_front(tmp_path, vp9):
    vfr = vf.make_vfr_video(tmp_path)
    with pytest.raises(VideoError, match="variable frame rate") as err:
        make_unlabeled_loader([vp9, vfr], 4, 2, NATIVE, backend="dali")
    assert vfr in str(err.value)
    missing = str(tmp_path / "missing.webm")
    with pytest.raises(VideoError, match=missing):
        iter_prediction_chunks(missing, NATIVE, backend="dali")
    with pytest.raises(VideoError, match="not h264"):
        iter_prediction_chunks(vf.make_video(tmp_path, "h264", 12), NATIVE, backend="dali")


# ---------------------------------------------------------------- training loader


def take(loader, n):
    return [next(loader) for _ in range(n)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_batches_are_contiguous_sequences_of_one_video(vp9_pair, backend):
    loader = make_unlabeled_loader(vp9_pair, 6, 4, NATIVE, backend=backend, seed=3)
    for batch in take(loader, 3):
        assert batch["frames"].shape == (4, 6, 3, *NATIVE)
        assert batch["frames"].dtype == torch.float32
        assert batch["frame_index"].shape == (4, 6) and batch["frame_index"].dtype == torch.int64
        assert batch["video_index"].shape == (4,) and batch["video_index"].dtype == torch.int64
        assert batch["to_frame"].shape == (4, 2, 3) and batch["to_frame"].dtype == torch.float32
        for b in range(4):
            video, index = int(batch["video_index"][b]), batch["frame_index"][b]
            assert (index.diff() == 1).all() and 0 <= index[0] and index[-1] < (37, 30)[video]
            # pixels: the frames of that video at those indices (video 1 shows index + 100)
            shown = np.array(indices_shown(batch["frames"][b])) - 100 * video
            assert shown.tolist() == index.tolist()


def seen_frames(loader, batches: int) -> set[tuple[int, int]]:
    seen = set()
    for batch in take(loader, batches):
        for video, row in zip(batch["video_index"].tolist(), batch["frame_index"].tolist()):
            seen.update((video, t) for t in row)
    return seen


@pytest.mark.parametrize("backend", BACKENDS)
def test_shards_read_disjoint_frames(vp9_pair, backend):
    # one video, two shards: disjoint frame ranges of it
    one = [
        seen_frames(
            make_unlabeled_loader(vp9_pair[:1], 4, 4, NATIVE, backend, shard_id=k, num_shards=2), 6
        )
        for k in (0, 1)
    ]
    assert not one[0] & one[1]
    assert max(t for _, t in one[0]) < 18 <= min(t for _, t in one[1])
    # two videos, two shards: each shard its own video
    two = [
        seen_frames(
            make_unlabeled_loader(vp9_pair, 4, 4, NATIVE, backend, shard_id=k, num_shards=2), 4
        )
        for k in (0, 1)
    ]
    assert {v for v, _ in two[0]} == {0} and {v for v, _ in two[1]} == {1}


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_stream_is_deterministic_given_seed(vp9_pair, backend):
    def run(seed):
        loader = make_unlabeled_loader(vp9_pair, 5, 3, (24, 32), backend, augment=True, seed=seed)
        return take(loader, 3)

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not all(torch.equal(a["to_frame"], b["to_frame"]) for a, b in zip(first, other))


def test_dali_and_pyav_training_frames_agree(vp9):
    """Same seed and one video: both backends draw the same augmentations (documented); DALI's
    augmented frames equal PyAV's decode of the same frames put through warp_normalise with the
    same geometry and photometric parameters."""
    spec = ClipAugmentSpec(rotation_deg=20, scale=0.2, shift=0.1, brightness=0.15, contrast=0.4)
    size = (20, 28)
    dali = take(make_unlabeled_loader([vp9], 5, 3, size, "dali", augment=spec, seed=5), 2)
    pyav = take(make_unlabeled_loader([vp9], 5, 3, size, "pyav", augment=spec, seed=5), 2)
    stream = augment_rng(5, 0)  # the loaders' augmentation stream for seed 5, shard 0
    frame_size = (vf.HEIGHT, vf.WIDTH)
    with PyAVReader(vp9) as reader:
        for d, p in zip(dali, pyav):
            aug = draw_clips(stream, spec, size, 3)
            jitter = aug.model_to_resized
            to_frame = torch.from_numpy(to_frame_matrix(jitter, frame_size, size)).float()
            assert torch.allclose(d["to_frame"], to_frame, atol=1e-5)
            assert torch.allclose(p["to_frame"], to_frame, atol=1e-5)
            for b in range(3):
                clip = torch.from_numpy(reader.read(int(d["frame_index"][b, 0]), 5))
                expected = warp_normalise(
                    clip,
                    d["to_frame"][b],
                    size,
                    torch.full((5,), aug.contrast[b]),
                    torch.full((5,), aug.brightness[b]),
                )
                diff = np.abs(grey(expected) - grey(d["frames"][b]))
                assert diff.max() <= GREY_TOLERANCE * max(1.0, aug.contrast[b])


def dot_peak(frame: torch.Tensor) -> tuple[float, float]:
    """Sub-pixel position (x, y) of the brightest blob in a (3, H, W) normalised frame."""
    g = grey(frame[None])[0] - 20.0
    y, x = np.unravel_index(np.argmax(g), g.shape)
    ys, xs = np.mgrid[y - 3 : y + 4, x - 3 : x + 4]
    w = g[ys.clip(0, g.shape[0] - 1), xs.clip(0, g.shape[1] - 1)].clip(0, None)
    return float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_to_frame_maps_augmented_model_pixels_back_to_frame_pixels(tmp_path, backend):
    width, height = 120, 96
    path = vf.make_dot_video(tmp_path, "vp9", 30, width, height)
    spec = ClipAugmentSpec(rotation_deg=15, scale=0.2, shift=0.1, brightness=0.1, contrast=0.2)
    size = (64, 80)
    errors, moved = [], []
    for batch in take(make_unlabeled_loader([path], 4, 4, size, backend, augment=spec, seed=11), 2):
        for b in range(4):
            m = batch["to_frame"][b].double().numpy()
            moved.append(abs(np.linalg.det(m[:, :2]) - 1.5**2) + abs(m[0, 1]))
            for s in range(4):
                x, y = dot_peak(batch["frames"][b, s])
                fx, fy = m @ np.array([x, y, 1.0])
                tx, ty = vf.dot_position(int(batch["frame_index"][b, s]), width, height)
                errors.append(np.hypot(fx - tx, fy - ty))
    assert max(moved) > 0.05  # the augmentation really rotated/scaled
    # Measured: mean 0.03 px, max 0.21 px for both backends. A half-pixel convention slip
    # (align_corners, or a missing +-0.5 in DALI's corner convention) raises the mean to
    # 0.26-0.36 px, so the bound is tighter than the ~1 px the contract asks for.
    assert np.mean(errors) < 0.1 and max(errors) < 0.5, (np.mean(errors), max(errors))


@pytest.mark.parametrize("chunk, context", [(5, 0), (4, 3)])
def test_parallel_decoders_give_the_single_decoder_chunks(vp9, monkeypatch, chunk, context):
    """Several DALI pipelines (segments dealt round-robin, drained by threads) hand out the
    same frames in the same order as one pipeline; small segments force many seeks."""
    import lpray.inference.chunks as chunks

    monkeypatch.setattr(chunks, "SEGMENT_FRAMES", 2 * chunk)
    one = list(iter_prediction_chunks(vp9, NATIVE, chunk, context, backend="dali", decoders=1))
    three = list(iter_prediction_chunks(vp9, NATIVE, chunk, context, backend="dali", decoders=3))
    assert len(one) == len(three) == -(-37 // chunk)
    for a, b in zip(one, three, strict=True):
        assert torch.equal(a["frame_index"], b["frame_index"])
        assert indices_shown(b["frames"]) == a["frame_index"].tolist()
        assert np.abs(grey(a["frames"]) - grey(b["frames"])).max() <= GREY_TOLERANCE


def test_prediction_segments_cover_the_video_in_whole_chunks():
    from lpray.inference.chunks import SEGMENT_FRAMES, prediction_segments

    assert prediction_segments(37, 5, 1) == [(0, 37)]
    segments = prediction_segments(994, 64, 4)
    assert segments[0] == (0, 256) and segments[-1][1] == 994  # 16 chunks -> 4 x 4 chunks
    assert all(b[0] == a[1] for a, b in zip(segments, segments[1:]))
    assert all((stop - start) % 64 == 0 for start, stop in segments[:-1])
    long = prediction_segments(100_000, 64, 4)
    assert max(stop - start for start, stop in long) <= SEGMENT_FRAMES + 63
    with pytest.raises(ValueError, match="decoders"):
        next(iter_prediction_chunks("missing.webm", NATIVE, 8, backend="dali", decoders=0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="DALI's GPU decoder needs a CUDA GPU")
@pytest.mark.parametrize("decoders", [1, 4])
def test_dali_gpu_frames_equal_pyav_frames_on_the_real_h264_video(decoders):
    """NVDEC through lpray's pipeline, one or several decoders, against PyAV on the real
    mirror-mouse H.264 clip at native size: every frame, in order, within decoder rounding."""
    from conftest import MIRROR_MOUSE, require_shared

    video = str(require_shared(MIRROR_MOUSE / "videos" / "test_vid.mp4"))
    info = probe_video(video)
    size = (info.height, info.width)
    with PyAVReader(video) as reader:
        truth = reader.read(0, info.n_frames)[..., 0].astype(float)
    seen, worst, misplaced = 0, 0.0, []
    for chunk in iter_prediction_chunks(video, size, 128, 0, "dali", "cuda", decoders):
        got = grey(chunk["frames"][chunk["valid"]].float().cpu())
        index = chunk["frame_index"][chunk["valid"]].cpu().numpy()
        assert index.tolist() == list(range(seen, seen + len(index)))
        for frame, t in zip(got, index):
            # Neighbouring frames of a 250 fps clip look alike, so beyond a small mean
            # difference the frame must match its own index better than its neighbours.
            near = range(max(0, t - 2), min(info.n_frames, t + 3))
            diffs = {j: float(np.abs(frame - truth[j]).mean()) for j in near}
            worst = max(worst, diffs[t])
            if min(diffs, key=diffs.get) != t:
                misplaced.append(int(t))
        seen += len(index)
    assert seen == info.n_frames
    assert not misplaced, f"frames closer to a neighbour than to themselves: {misplaced[:10]}"
    # NVDEC and FFmpeg convert colour slightly differently; a wrong image differs by far more
    assert worst <= 3.0, worst


def test_several_readers_interleave_the_single_reader_stream(vp9_pair):
    """With readers=2 the batches alternate between two DALI pipelines: the first pipeline's
    batches (even positions) are exactly the single-reader stream, the second draws its own."""
    args = (vp9_pair, 5, 2, (24, 32), "dali")
    single = take(make_unlabeled_loader(*args, augment=True, seed=3), 3)
    double = take(make_unlabeled_loader(*args, augment=True, seed=3, readers=2), 6)
    for a, b in zip(single, double[0::2]):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not any(torch.equal(a["to_frame"], b["to_frame"]) for a, b in zip(single, double[1::2]))
    with pytest.raises(ValueError, match="readers"):
        make_unlabeled_loader(*args, readers=0)
