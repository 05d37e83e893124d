"""Shared fixtures: the real data folder, a tiny synthetic project, one local Ray cluster."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# ../shared/data beside the checkout; LPRAY_SHARED_DATA points elsewhere (the GPU machine's copy).
SHARED_DATA = Path(
    os.environ.get("LPRAY_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
MIRROR_MOUSE = SHARED_DATA / "mirror-mouse-example"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # tests never talk to a token-protected cluster
# Tests never download weights: a test that would (model.pretrained left to default true on a
# real project) fails with lpray's offline error instead; test_weights.py lifts it for its
# file:// mirrors. timm's Hugging Face downloads likewise.
os.environ.setdefault("LPRAY_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The S3-protocol test server (moto, started by the ``s3`` fixture) is reached the way a cluster
# reaches S3: through the standard AWS variables, set here, before the session's Ray cluster
# starts, so that Ray workers inherit them. Dummy credentials: moto accepts any.
S3_ENDPOINT = f"http://127.0.0.1:{_free_port()}"
for _key, _value in {
    "AWS_ENDPOINT_URL": S3_ENDPOINT,
    "AWS_ACCESS_KEY_ID": "lpray-test",
    "AWS_SECRET_ACCESS_KEY": "lpray-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[_key] = _value


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (the ../shared/data folder holds the real datasets)")
    return path


@pytest.fixture(scope="session")
def mirror_mouse() -> Path:
    return require_shared(MIRROR_MOUSE)


TINY_SYNTHETIC = {
    "seed": 3,
    "n_train_videos": 2,
    "n_test_videos": 1,
    "frames_per_video": 40,
    "n_labeled": 30,
    "frame_size": [64, 64],
    "occlusion": True,
}


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic project shared by the training tests (built once per session)."""
    from lpray.data.synthetic import SyntheticSpec, make_synthetic_project

    spec = SyntheticSpec(**{**TINY_SYNTHETIC, "frame_size": tuple(TINY_SYNTHETIC["frame_size"])})
    return make_synthetic_project(tmp_path_factory.mktemp("tiny") / "project", spec).root


def tiny_config(project: Path, output_dir: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """Config values for a seconds-long CPU run on the tiny project."""
    values: dict[str, Any] = {
        "data": {"root": str(project), "image_size": [64, 64], "train_prob": 0.7, "val_prob": 0.15},
        # random init (a converted or hand-made project is a real one: pretrained by default)
        "model": {"backbone": "resnet18", "pretrained": False},
        "training": {
            "max_epochs": 2,
            "batch_size": 8,
            "sequence_length": 4,
            "output_dir": str(output_dir),
            "progress_bar": False,
            "accelerator": "cpu",
            "log_every_n_steps": 1,
        },
    }
    for section, updates in sections.items():
        values.setdefault(section, {}).update(updates)
    return values


@pytest.fixture(scope="session")
def ray_cluster() -> Any:
    """One real local Ray cluster for the whole session (2 CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 1024**2,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


class S3Server:
    """moto's S3 server on 127.0.0.1:``port`` that can go down and come back, data kept.

    moto keeps the buckets in module-level backends of this process, not in the HTTP server, so
    stopping the listener (clients then get "connection refused", as from a store that is down)
    and starting a new one on the same port serves the same objects again: measured, an object
    written before ``stop()`` reads back after ``start()``. (moto's ``ThreadedMotoServer`` is the
    same werkzeug server without the ``stop_on`` trigger.)
    """

    def __init__(self, port: int) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.port = port
        self.app = DomainDispatcherApplication(create_backend_app)
        self.trigger: Any = None
        self.server: Any = None
        self.thread: Any = None

    def start(self) -> None:
        import threading

        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        self.server = make_server(
            "127.0.0.1", self.port, self._serve, threaded=True, request_handler=MotoRequestHandler
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()
            self.server = None

    def stop_on(self, predicate: Any) -> None:
        """Go down at the first request for which ``predicate(method, path)`` is true; that
        request is answered 503 and every later one refused, until :meth:`start`."""
        self.trigger = predicate

    def _serve(self, environ: dict[str, Any], start_response: Any) -> Any:
        import threading

        trigger = self.trigger
        if trigger is not None and trigger(environ["REQUEST_METHOD"], environ["PATH_INFO"]):
            self.trigger = None
            threading.Thread(target=self.stop, daemon=True).start()
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return [b""]
        return self.app(environ, start_response)


@pytest.fixture(scope="session")
def s3_server() -> Any:
    """A real S3-protocol server (moto's, see :class:`S3Server`) for the whole session, at the
    endpoint in ``AWS_ENDPOINT_URL``, with an empty bucket ``lpray-test``."""
    pytest.importorskip("moto.server", reason="moto[server] is a test dependency")
    s3fs = pytest.importorskip("s3fs")
    server = S3Server(int(S3_ENDPOINT.rsplit(":", 1)[1]))
    server.start()
    try:
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": S3_ENDPOINT}).mkdir("lpray-test")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(s3_server: S3Server) -> Any:
    """The s3fs filesystem talking to the session's S3 server (bucket ``lpray-test``)."""
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": S3_ENDPOINT})


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files under ``folder``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {folder}"
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return scalars


# -- The fast tier ---------------------------------------------------------------------------
# `.ci/run` and scripts/test.sh run `-m "not slow"` first, so a quick failure is seen in
# minutes; a test that trains a network or starts Ray there would slow every run down unseen.
# So outside tests marked slow, Lightning's Trainer.fit and ray.init fail the test, naming the
# marker to add. Patched around setup too: module- and session-scoped fixtures are built there.
# (Only modules already imported are patched: lpray's training and Ray modules import Lightning
# and Ray at module level, and test files import them at collection time.)


def _refuse(item: pytest.Item, what: str) -> Any:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{item.nodeid} {what} but is not marked slow: add @pytest.mark.slow")

    return refused


@contextlib.contextmanager
def _fast_tier_guard(item: pytest.Item) -> Iterator[None]:
    patch = pytest.MonkeyPatch()
    if item.get_closest_marker("slow") is None:
        if "pytorch_lightning" in sys.modules:
            trainer = sys.modules["pytorch_lightning"].Trainer
            patch.setattr(trainer, "fit", _refuse(item, "trains a network (Trainer.fit)"))
        if "ray" in sys.modules and hasattr(sys.modules["ray"], "init"):
            patch.setattr(sys.modules["ray"], "init", _refuse(item, "starts Ray (ray.init)"))
    try:
        yield
    finally:
        patch.undo()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _fast_tier_guard(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _fast_tier_guard(item):
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The session's Ray cluster may already be up when a fast test asks for it (a slow test
    # started it earlier in a one-tier run), so ray.init's guard would not see it: name them here.
    unmarked = [
        item.nodeid
        for item in items
        if "ray_cluster" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests using ray_cluster must be marked slow: " + ", ".join(unmarked)
        )
