"""``lpray export``: onnxruntime on the CPU reproduces lpray's own keypoints from the ONNX file,
for any frame count, for the single-frame and the context model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lpray.inference.network import load_network

from members import make_member

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency (lpray[export])")
pytest.importorskip("onnxscript", reason="the ONNX exporter is a test dependency (lpray[export])")

NAMES = ["nose", "ear_l", "ear_r", "tail"]


@pytest.mark.parametrize("model_type", ["heatmap", "context"])
def test_onnxruntime_reproduces_the_keypoints(tmp_path, model_type):
    member = make_member(tmp_path / "m", 3, NAMES, image_size=(64, 96), model_type=model_type)
    out = tmp_path / "exported" / "pose.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "lpray", "export", str(member), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads(out.with_name("pose.onnx.json").read_text())
    assert meta["keypoint_names"] == NAMES and meta["input"]["shape"] == ["S", 3, 64, 96]
    assert meta["input"]["context_frames"] == (2 if model_type == "context" else 0)
    network = load_network(member, "cpu", precision="fp32")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    torch.manual_seed(0)
    for frames in (1, 5, 11):  # the frame count is dynamic (the example had 8)
        x = torch.randn(frames, 3, 64, 96)
        xy, confidence = (t.numpy() for t in network.predict_sequence(x))
        got_xy, got_conf = session.run(None, {"frames": x.numpy()})
        assert got_xy.shape == (frames, len(NAMES), 2)
        # keypoints move with the input, so equality is not a constant's
        assert frames == 1 or np.ptp(xy[:, 0, 0]) > 0.05
        np.testing.assert_allclose(got_xy, xy, atol=1e-3)
        np.testing.assert_allclose(got_conf, confidence, atol=1e-4)
    # the export left the decoding's cache clean: the network still gives real numbers
    assert np.isfinite(network.predict_sequence(torch.randn(2, 3, 64, 96))[0].numpy()).all()


def test_export_refuses_a_network_not_in_float32_on_cpu(tmp_path):
    from lpray.inference.export import ExportError, export_onnx

    member = make_member(tmp_path / "m", 0, NAMES)
    with pytest.raises(ExportError, match="precision='fp32'"):
        export_onnx(load_network(member, "cpu", precision="bf16"), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
