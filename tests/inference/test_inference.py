"""The inference layer: no Lightning, the same keypoints as the training code, one decoding for
every member, segments that stitch to the whole video."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lpray
from lpray.data.geometry import to_frame_matrix
from lpray.data.video import PyAVReader, validate_video
from lpray.data.warp import warp_normalise
from lpray.inference.decode import decode_heatmaps
from lpray.inference.engine import predict_range
from lpray.inference.network import load_network, map_points
from lpray.io.layout import ModelDir
from lpray.models.coordinates import soft_argmax

import video_fixtures as vf
from members import make_member

NAMES = ["nose", "ear_l", "ear_r", "tail"]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    """A 37-frame H.264 clip whose frames all differ (B-frames: decode order != display)."""
    return vf.make_video(tmp_path_factory.mktemp("clip"), "h264", 37)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two single-frame members and one context member (random, sharpened heads)."""
    root = tmp_path_factory.mktemp("members")
    return {
        "heatmap": [make_member(root / f"h{k}", k, NAMES) for k in range(2)],
        "context": make_member(root / "ctx", 7, NAMES, model_type="context"),
    }


def test_decoding_equals_the_training_soft_argmax():
    """The inference decoding is the same function as the differentiable one (two-mode maps,
    sharp and flat ones, map-border peaks, odd sizes): both against the float64 soft-argmax
    (float32 sums of a broad softmax differ from each other by up to ~1e-3 px; the inference
    decoding's are the closer to float64, measured 9e-6 vs 9e-4 px at temperature 10)."""
    generator = torch.Generator().manual_seed(0)
    for shape in [(6, 4, 64, 64), (3, 2, 17, 23)]:
        maps = torch.randn(shape, generator=generator) * 0.3
        maps[:, :, 5, 7] += 1.0
        maps[0, 0, 10, 3] += 0.99  # a second mode of nearly the same height
        maps[1, 1, 0, -1] += 2.0  # a peak on the border
        for temperature in (10.0, 100.0, 1000.0):
            expected_xy, expected_conf = soft_argmax(maps.double(), temperature)
            xy, conf = decode_heatmaps(maps, temperature)
            np.testing.assert_allclose(xy, expected_xy, atol=1e-4)
            np.testing.assert_allclose(conf, expected_conf.clamp(0, 1), atol=1e-5)


def lpray_imports(paths: list[Path]) -> set[str]:
    """Every ``lpray.*`` module the files import, at module level or inside functions."""
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "lpray"}


def test_prediction_and_tracking_import_no_lightning_and_no_training_code():
    """Inference, tracking and their commands, and every lpray module they import anywhere
    (function-level imports included, one level down), load without Lightning or lpray.train:
    importing Lightning costs ~9 s on the GPU machine."""
    package = Path(lpray.__file__).parent
    files = [*(package / "inference").glob("*.py"), *(package / "track").glob("*.py")]
    files += [package / "commands" / "predict.py", package / "commands" / "track.py"]
    modules = lpray_imports(files)
    nested = [package.parent / (m.replace(".", "/") + ".py") for m in modules]
    modules |= lpray_imports([p for p in nested if p.is_file()])
    assert "lpray.inference.engine" in modules and "lpray.smooth.api" in modules
    assert not {m for m in modules if m.startswith("lpray.train")}, modules
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {sorted(modules)!r}]; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning') "
        "or m.startswith('lpray.train')]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def reference_keypoints(model_dir, video: str) -> tuple[np.ndarray, np.ndarray]:
    """The training code's prediction, frame by frame: the LightningModule, each frame's own
    window of neighbours through the labeled-frame path, the differentiable soft-argmax."""
    from lpray.train.module import PoseModule

    saved = torch.load(ModelDir(model_dir).best_checkpoint, weights_only=True)
    hyper = saved["hyper_parameters"]
    module = PoseModule(hyper["config"], hyper["keypoint_names"])
    module.load_state_dict(saved["state_dict"])
    module.eval()
    with PyAVReader(video) as reader:
        raw = torch.from_numpy(reader.read(0, len(reader)))
        frame_size = (reader.info.height, reader.info.width)
    size = module.image_size
    to_frame = torch.from_numpy(to_frame_matrix(np.eye(2, 3), frame_size, size)).float()
    frames = warp_normalise(raw, to_frame, size)
    c = module.model.context
    n = len(frames)
    xy, confidence = [], []
    with torch.no_grad():
        for t in range(n):
            window = frames[np.clip(np.arange(t - c, t + c + 1), 0, n - 1)][None]
            points, conf = module.predict_frames(window)
            xy.append(map_points(to_frame[None], points)[0].numpy())
            confidence.append(conf[0].numpy())
    return np.stack(xy), np.stack(confidence)


def test_every_member_equals_the_training_code_prediction(members, video):
    """All three members (two single-frame, one context) through one engine call on one
    decoding equal the LightningModule's frame-by-frame predictions."""
    dirs = [*members["heatmap"], members["context"]]
    networks = [load_network(d, "cpu") for d in dirs]
    result = predict_range(networks, video, chunk_size=8)
    assert result.xy.shape == (3, 37, len(NAMES), 2)
    spread = np.ptp(result.xy[0].reshape(37, -1), axis=0).max()
    assert spread > 1.0  # predictions move with the frames: the comparison compares something
    for k, model_dir in enumerate(dirs):
        xy, confidence = reference_keypoints(model_dir, video)
        np.testing.assert_allclose(result.xy[k], xy, atol=2e-3)
        np.testing.assert_allclose(result.confidence[k], confidence, atol=1e-4)


def test_compiled_members_share_one_graph_and_equal_eager(members):
    """``compile_shared``: the members' weights are graph inputs, so two members of one
    architecture are traced once (dynamo's counters), and each still gives its own keypoints."""
    from torch._dynamo.utils import counters

    from lpray.inference.network import compile_shared

    frames = torch.randn(12, 3, 64, 64)
    networks = [load_network(d, "cpu") for d in members["heatmap"]]
    eager = [n.predict_sequence(frames) for n in networks]
    assert (eager[0][0] - eager[1][0]).abs().max() > 0.1  # different members, different points
    torch._dynamo.reset()
    counters.clear()
    assert compile_shared(networks, backend="eager") == 1
    compiled = [n.predict_sequence(frames) for n in networks]
    assert counters["stats"]["unique_graphs"] == 1
    for (xy, conf), (xy_c, conf_c) in zip(eager, compiled):
        torch.testing.assert_close(xy_c, xy, rtol=0, atol=1e-4)
        torch.testing.assert_close(conf_c, conf, rtol=0, atol=1e-5)
    torch._dynamo.reset()


@pytest.mark.parametrize("members_used", [1, 3])
def test_a_video_is_decoded_once_whatever_the_member_count(
    members, video, monkeypatch, members_used
):
    """One reader opened, each frame decoded once, for 1 or 3 members; with 3 parallel parts
    three readers share the frames (each frame still decoded once, plus context overlaps)."""
    readers, decoded = [], []
    original_init, original_read = PyAVReader.__init__, PyAVReader.read

    def counting_init(self, *args, **kwargs):
        readers.append(args[0])
        original_init(self, *args, **kwargs)

    def counting_read(self, start, count, planes=False):
        decoded.extend(range(start, start + count))
        return original_read(self, start, count, planes)

    info = validate_video(video)  # the probe's work, before counting
    monkeypatch.setattr(PyAVReader, "__init__", counting_init)
    monkeypatch.setattr(PyAVReader, "read", counting_read)
    dirs = [*members["heatmap"], members["context"]][:members_used]
    networks = [load_network(d, "cpu") for d in dirs]
    result = predict_range(networks, video, chunk_size=4, info=info)
    assert len(result.xy) == members_used and result.decode_passes == 1
    assert len(readers) == 1 and sorted(decoded) == list(range(37))
    readers.clear(), decoded.clear()
    parallel = predict_range(networks, video, chunk_size=1, decoders=3, info=info)  # 8+ chunks
    assert parallel.parts == 3 and len(readers) == 3
    context = max(n.context for n in networks)
    assert len(decoded) == 37 + 2 * 2 * context  # two inner part edges, context each side
    sequential = predict_range(networks, video, chunk_size=1)  # the same batches, one reader
    np.testing.assert_allclose(parallel.xy, sequential.xy, atol=1e-5)


def backends():
    from lpray.data.dali_pipeline import dali_available

    return [
        "pyav",
        pytest.param(
            "dali", marks=pytest.mark.skipif(not dali_available(), reason="DALI not installed")
        ),
    ]


@pytest.mark.parametrize("backend", backends())
def test_segments_stitch_to_the_whole_video(members, tmp_path, backend):
    """Segments (cut mid-chunk, one shorter than the context) give exactly the whole video's
    predictions, also for the context model whose windows cross the segment edges."""
    clip = vf.make_video(tmp_path, "vp9", 37)  # DALI's CPU reader decodes VP9
    networks = [load_network(members["heatmap"][0], "cpu"), load_network(members["context"], "cpu")]
    whole = predict_range(networks, clip, chunk_size=8, backend=backend)
    pieces = [(0, 11), (11, 12), (12, 30), (30, 37)]
    parts = [predict_range(networks, clip, a, b, chunk_size=8, backend=backend) for a, b in pieces]
    assert [(p.start, p.stop) for p in parts] == pieces
    np.testing.assert_allclose(np.concatenate([p.xy for p in parts], axis=1), whole.xy, atol=1e-4)
    np.testing.assert_allclose(
        np.concatenate([p.confidence for p in parts], axis=1), whole.confidence, atol=1e-5
    )
    # without real neighbours the context member's edge frames change: the overlap matters
    alone = predict_range(networks[1:], clip, chunk_size=8, backend=backend)
    assert np.allclose(alone.xy[0], whole.xy[1], atol=1e-4)
    with pytest.raises(ValueError, match="frame range"):
        predict_range(networks, clip, 30, 38)


def test_segment_chunks_carry_real_neighbours_from_outside_the_range(members, tmp_path):
    """A segment decodes its context from outside its range: without those frames (edges
    repeated instead) the context member predicts its first frame differently."""
    from lpray.inference.chunks import iter_prediction_chunks

    clip = vf.make_video(tmp_path, "vp9", 37)
    network = load_network(members["context"], "cpu")
    [chunk] = iter_prediction_chunks(clip, network.image_size, 18, 2, "pyav", start=12, stop=30)
    assert chunk["frame_index"].tolist() == list(range(10, 32))
    assert chunk["valid_rows"] == (2, 20) and chunk["valid_frames"].tolist() == list(range(12, 30))
    inner = predict_range([network], clip, 12, 30, chunk_size=18, backend="pyav")
    alone, _ = network.predict_sequence(chunk["frames"][2:20])  # neighbours cut off
    to_frame = chunk["to_frame"][None].expand(18, 2, 3)
    cut = map_points(to_frame, alone).numpy()
    assert np.abs(cut[0] - inner.xy[0, 0]).max() > 1e-3  # the edge frame needs its neighbours
    np.testing.assert_allclose(cut[5:13], inner.xy[0, 5:13], atol=1e-4)  # the middle does not
