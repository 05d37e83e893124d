"""Members replayed from one CUDA graph per chunk shape give what their eager passes give.

The CUDA tests run on the GPU machine (``python -m pytest tests/inference/test_graphs.py``); on a CPU
only the eager path runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpray.inference.engine import predict_range
from lpray.inference.graphs import ChunkPasses
from lpray.inference.network import load_network

import video_fixtures as vf
from members import make_member

NAMES = ["nose", "ear_l", "ear_r", "tail"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@pytest.fixture(scope="module")
def member_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    heatmap = [make_member(root / f"h{k}", k, NAMES) for k in range(2)]
    return {
        "heatmap": heatmap,
        "context": make_member(root / "ctx", 7, NAMES, model_type="context"),
    }


def _frames(seed: int, count: int, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, 64, 64, generator=generator).to(device)


def test_on_a_cpu_members_run_eagerly(member_dirs):
    networks = [load_network(d, "cpu") for d in member_dirs["heatmap"]]
    passes = ChunkPasses(networks, cuda_graphs=True)
    assert not passes.cuda_graphs  # no GPU: nothing to capture
    frames = _frames(0, 6, "cpu")
    for (xy, conf), network in zip(passes([1, 0], frames), [networks[1], networks[0]]):
        expected_xy, expected_conf = network.predict_sequence(frames)
        torch.testing.assert_close(xy, expected_xy)
        torch.testing.assert_close(conf, expected_conf)
    assert passes.captures == 0


@cuda
@pytest.mark.parametrize("kind", ["heatmap", "context"])
def test_a_replay_equals_the_eager_passes_chunk_after_chunk(member_dirs, kind):
    """Two members (or a context member) in one graph: every replay on new frames equals the
    eager passes on them (outputs are not stale from the previous chunk), one capture."""
    dirs = member_dirs["heatmap"] if kind == "heatmap" else [member_dirs["context"]]
    networks = [load_network(d, "cuda") for d in dirs]
    members = list(range(len(networks)))
    passes = ChunkPasses(networks, cuda_graphs=True)
    previous = None
    for seed in range(3):
        frames = _frames(seed, 12, "cuda")
        replayed = [(xy.clone(), conf.clone()) for xy, conf in passes(members, frames)]
        for (xy, conf), network in zip(replayed, networks):
            expected_xy, expected_conf = network.predict_sequence(frames)
            torch.testing.assert_close(xy, expected_xy, atol=1e-3, rtol=0)
            torch.testing.assert_close(conf, expected_conf, atol=1e-4, rtol=0)
        if previous is not None:  # new frames, new keypoints
            assert (replayed[0][0] - previous).abs().max() > 0.1
        previous = replayed[0][0]
    assert passes.captures == 1


@cuda
def test_tracking_with_graphs_equals_eager_tracking(member_dirs, tmp_path):
    """A whole video (a padded last chunk, 4 parts on their own threads) with every member:
    graph replays and eager passes give the same keypoints."""
    video = vf.make_video(tmp_path, "h264", 37)
    dirs = [*member_dirs["heatmap"], member_dirs["context"]]
    networks = [load_network(d, "cuda") for d in dirs]
    eager = predict_range(networks, video, chunk_size=8, passes=ChunkPasses(networks, False))
    passes = ChunkPasses(networks, True)
    graphed = predict_range(networks, video, chunk_size=8, passes=passes, decoders=4)
    np.testing.assert_allclose(graphed.xy, eager.xy, atol=1e-3)
    np.testing.assert_allclose(graphed.confidence, eager.confidence, atol=1e-4)
    # members of one input size get the same chunk (context frames included) and share one
    # graph, the context member too
    assert passes.captures == 1
