"""``lpray export MODEL_DIR``: the network as an ONNX model (keypoints out, decoding included)."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "Export a trained model to ONNX (frames in, keypoints and confidences out) + a JSON sidecar."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="model directory written by `lpray train` (or a URL)")
    parser.add_argument(
        "--out", default=None, help="the .onnx file (default: MODEL_DIR/export/model.onnx)"
    )
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"])


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from lpray.inference.export import export_onnx
    from lpray.inference.network import load_network
    from lpray.io.storage import filesystem, is_local, join, local_copy, local_path

    network = load_network(
        local_copy(args.model_dir), "cpu", checkpoint=args.checkpoint, precision="fp32"
    )
    out = args.out or join(args.model_dir, "export", "model.onnx")
    if is_local(out):
        path = export_onnx(network, local_path(out))
    else:  # an object store: written here, then uploaded (the sidecar last)
        with tempfile.TemporaryDirectory(prefix="lpray-export-") as folder:
            path = export_onnx(network, Path(folder) / Path(out).name)
            fs, inner = filesystem(out)
            fs.put_file(str(path), inner)
            fs.put_file(str(path) + ".json", inner + ".json")
    print(f"wrote {out} and {Path(str(out)).name}.json ({len(network.keypoint_names)} keypoints)")
    return 0
