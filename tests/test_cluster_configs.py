"""The files in cluster/ and the cluster guide: valid for the tools that read them, and safe.

Nothing here starts a cluster. The launcher YAMLs go through Ray's own config preparation and
JSON-schema validation (what `ray up` does before it touches a cloud), the runtime_env through
Ray's RuntimeEnv and exclude matcher, and everything through checks of what the issue asks for:
CPU head, GPU workers that scale from zero, dashboard on localhost, token auth on every
`ray start`, no credentials, entrypoints and extras that exist.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
GUIDE = ROOT / "docs" / "cluster.md"
LAUNCHERS = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
RAYJOB = CLUSTER / "kuberay-rayjob.yaml"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
LOCALHOST = {"127.0.0.1", "localhost"}

# Credential shapes that must never appear in a committed file.
CREDENTIAL_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "aws_secret_access_key": re.compile(r"aws_secret_access_key", re.I),
    "aws_access_key_id": re.compile(r"aws_access_key_id", re.I),
    "private_key": re.compile(r"private_key", re.I),
    "PEM private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "password": re.compile(r"password\s*[:=]", re.I),
    "GCP key file": re.compile(r"\"type\"\s*:\s*\"service_account\""),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def cluster_files() -> list[Path]:
    files = sorted(p for p in CLUSTER.rglob("*") if p.is_file())
    assert files, "cluster/ is empty"
    return files


def text_files() -> list[Path]:
    """Every file whose words users copy: the cluster folder and the guide."""
    return [*cluster_files(), GUIDE]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---------------------------------------------------------------- parsing and Ray's own checks


@pytest.mark.parametrize("path", [p for p in cluster_files() if p.suffix == ".yaml"], ids=str)
def test_every_yaml_parses_to_mappings(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(isinstance(doc, dict) and doc for doc in docs)


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_passes_rays_own_validation(name: str) -> None:
    """`ray up` prepares and schema-validates the config first; the same calls here."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(LAUNCHERS[name])
    validate_config(prepare_config(copy.deepcopy(config)))

    broken = copy.deepcopy(config)
    broken["available_node_types"][broken["head_node_type"]]["resource"] = {"CPU": 1}
    with pytest.raises(Exception, match="resource"):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_has_the_required_keys(name: str) -> None:
    config = load(LAUNCHERS[name])
    for key in (
        "cluster_name",
        "max_workers",
        "provider",
        "auth",
        "available_node_types",
        "head_node_type",
        "file_mounts",
        "setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ):
        assert key in config, f"{name}: missing {key}"
    assert config["provider"]["type"] == name
    assert config["head_node_type"] in config["available_node_types"]
    assert config["max_workers"] > 0
    # SSH user only: keys are made by the launcher, never named or embedded here.
    assert set(config["auth"]) == {"ssh_user"}


# ---------------------------------------------------------------- node types


def gpu_count(node_type: dict) -> float:
    return float(node_type.get("resources", {}).get("GPU", 0))


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_head_is_cpu_only_and_gpu_workers_scale_from_zero(name: str) -> None:
    config = load(LAUNCHERS[name])
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU", 0) > 0
    assert gpu_count(head) == 0
    node = head["node_config"]
    assert "guestAccelerators" not in node
    assert not re.match(
        r"^(g\d|p\d|a2-|a3-|g2-)", node.get("InstanceType", node.get("machineType"))
    )

    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    gpu_workers = {k: v for k, v in workers.items() if gpu_count(v) > 0}
    assert gpu_workers, f"{name}: no GPU worker type"
    for key, worker in gpu_workers.items():
        assert worker["min_workers"] == 0, key
        assert 0 < worker["max_workers"] <= config["max_workers"], key
        if name == "gcp":
            (accel,) = worker["node_config"]["guestAccelerators"]
            assert accel["acceleratorCount"] == gpu_count(worker), key
            # GPUs cannot live-migrate: Compute Engine refuses them without TERMINATE.
            assert worker["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"
        else:
            assert re.match(r"^(g\d|p\d)", worker["node_config"]["InstanceType"]), key


# ---------------------------------------------------------------- dashboard and token auth


def shell_segments(command: str) -> list[str]:
    """A shell command split into its simple commands (on ; && || and newlines)."""
    return [s.strip() for s in re.split(r";|&&|\|\||\n", command) if s.strip()]


def ray_start_auth_problems(command: str) -> list[str]:
    """Why a command's `ray start` would run without token auth or expose the dashboard."""
    problems = []
    exported = False
    for segment in shell_segments(command):
        try:
            words = shlex.split(segment)
        except ValueError:  # prose or markdown with an unbalanced quote
            words = segment.split()
        if words[:2] == ["export", "RAY_AUTH_MODE=token"]:
            exported = True
        try:
            at = next(i for i in range(len(words) - 1) if words[i : i + 2] == ["ray", "start"])
        except StopIteration:
            continue
        prefix = words[:at]
        if not exported and "RAY_AUTH_MODE=token" not in prefix:
            problems.append(f"no RAY_AUTH_MODE=token for: {segment}")
        if "--head" in words:
            hosts = [w.split("=", 1)[1] for w in words if w.startswith("--dashboard-host=")]
            if hosts != [h for h in hosts if h in LOCALHOST] or not hosts:
                problems.append(f"dashboard not bound to localhost: {segment}")
    return problems


def test_the_ray_start_checker_can_fail() -> None:
    ok = "ulimit -n 65536; RAY_AUTH_MODE=token ray start --head --dashboard-host=127.0.0.1"
    assert ray_start_auth_problems(ok) == []
    assert ray_start_auth_problems("export RAY_AUTH_MODE=token && ray start --address=h:6379") == []
    assert ray_start_auth_problems("RAY_AUTH_MODE=token; ray start --address=h:6379")
    assert ray_start_auth_problems("RAY_AUTH_MODE=token ray start --head")
    wide = "RAY_AUTH_MODE=token ray start --head --dashboard-host=" + ".".join("0000")
    assert ray_start_auth_problems(wide)


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_every_ray_start_has_token_auth_and_a_local_dashboard(name: str) -> None:
    config = load(LAUNCHERS[name])
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    starts = [c for c in commands if re.search(r"\bray\s+start\b", c)]
    assert any("--head" in c for c in starts), "no `ray start --head`"
    assert any("--head" not in c for c in starts), "no worker `ray start`"
    for command in starts:
        assert ray_start_auth_problems(command) == []
    # Every node gets the locally generated token where Ray looks for it.
    mounts = config["file_mounts"]
    remote = [r for r, local in mounts.items() if local == "~/.ray/auth_token"]
    assert remote and all(r.endswith("/.ray/auth_token") for r in remote)


def test_no_file_binds_anything_to_all_interfaces() -> None:
    for path in text_files():
        text = path.read_text()
        assert "0.0.0.0" not in text, path
        for host in re.findall(r"dashboard[-_]host[=:\s\"']+([\w.]+)", text):
            assert host.rstrip(".") in LOCALHOST, (path, host)


def test_every_ray_start_in_any_file_is_authenticated() -> None:
    """Also the commands in comments and in the guide: users copy those.

    A command is `ray start` followed by flags or by the end of the line (YAML folded blocks);
    prose that merely names `ray start` is not one.
    """
    for path in text_files():
        for line in path.read_text().splitlines():
            if re.search(r"\bray start(\s+--|\s*$)", line):
                command = line.replace("`", " ").strip().lstrip("#")
                assert ray_start_auth_problems(command) == [], (path, line)


# ---------------------------------------------------------------- credentials


def credential_hits(text: str) -> list[str]:
    return [name for name, pattern in CREDENTIAL_PATTERNS.items() if pattern.search(text)]


def test_the_credential_scanner_can_fail() -> None:
    samples = [
        "key: AKIA" + "ABCDEFGHIJKLMNOP",
        "aws_secret_" + "access_key = x",
        "ssh_private" + "_key: ~/.ssh/id",
        "-----BEGIN RSA PRIVATE" + " KEY-----",
        "pass" + "word: hunter2",
        '{"type": "service' + '_account"}',
    ]
    for sample in samples:
        assert credential_hits(sample), sample
    assert credential_hits("auth:\n  ssh_user: ubuntu\n") == []


@pytest.mark.parametrize("path", text_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_credentials_in_any_file(path: Path) -> None:
    assert credential_hits(path.read_text()) == []


# ---------------------------------------------------------------- KubeRay


def rayjob() -> dict:
    (doc,) = list(yaml.safe_load_all(RAYJOB.read_text()))
    return doc


def pod_containers(job: dict) -> dict[str, dict]:
    spec = job["spec"]["rayClusterSpec"]
    found = {"head": spec["headGroupSpec"]["template"]["spec"]["containers"][0]}
    for group in spec["workerGroupSpecs"]:
        found[group["groupName"]] = group["template"]["spec"]["containers"][0]
    found["submitter"] = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    return found


def test_rayjob_shape_and_cpu_head_gpu_workers() -> None:
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert re.search(r"\bpython experiments/\S+\.py\b", job["spec"]["entrypoint"])
    spec = job["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    assert head["rayStartParams"].get("dashboard-host", "127.0.0.1") in LOCALHOST
    head_res = head["template"]["spec"]["containers"][0]["resources"]
    assert all("nvidia.com/gpu" not in head_res.get(k, {}) for k in ("limits", "requests"))

    gpu_groups = [
        g
        for g in spec["workerGroupSpecs"]
        if int(
            g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)
        )
        > 0
    ]
    assert gpu_groups
    for group in gpu_groups:
        assert group["minReplicas"] == 0 and group["maxReplicas"] > 0
    assert spec.get("enableInTreeAutoscaling") is True


def test_rayjob_token_comes_from_a_secret_in_every_container() -> None:
    job = rayjob()
    auth = job["spec"]["rayClusterSpec"]["authOptions"]
    assert auth["mode"] == "token"
    secret = auth["secretName"]
    for role, container in pod_containers(job).items():
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["RAY_AUTH_MODE"].get("value") == "token", role
        token = env["RAY_AUTH_TOKEN"]
        assert "value" not in token, role
        assert token["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "auth_token"}, role
        for name, item in env.items():
            if re.search(r"TOKEN|SECRET|PASSWORD|KEY", name):
                assert "value" not in item, (role, name)


def test_no_kubernetes_secret_or_exposed_service_is_declared() -> None:
    for path in cluster_files():
        if path.suffix != ".yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc.get("kind") != "Secret", path
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0]
            assert not re.search(r"\b(LoadBalancer|NodePort|Ingress)\b", code), (path, line)


# ---------------------------------------------------------------- runtime_env


def test_runtime_env_is_valid_for_ray_and_excludes_heavy_folders() -> None:
    from ray._private.runtime_env.packaging import _get_excludes
    from ray.runtime_env import RuntimeEnv

    env = load(RUNTIME_ENV)
    RuntimeEnv(**env)  # Ray's own field and type checks
    assert env["working_dir"] == "."
    assert env["env_vars"]["NCCL_NVLS_ENABLE"] == "0"
    excluded = _get_excludes(ROOT, env["excludes"])
    for path in (
        "outputs/run/metrics.csv",
        ".venv/lib/site.py",
        ".git/HEAD",
        "lpray/__pycache__/a.pyc",
    ):
        assert excluded(ROOT / path), path
    for path in (
        "lpray/config.py",
        "experiments/synthetic.yaml",
        "pyproject.toml",
        "cluster/aws.yaml",
    ):
        assert not excluded(ROOT / path), path


def test_rayjob_runtime_env_is_valid_for_ray() -> None:
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load(rayjob()["spec"]["runtimeEnvYAML"])
    # The working_dir exists in the image, not here: Ray checks the rest.
    RuntimeEnv(**{k: v for k, v in env.items() if k != "working_dir"})
    assert env["env_vars"]["NCCL_NVLS_ENABLE"] == "0"
    # ... and it is where cluster/Dockerfile puts the checkout.
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^COPY .*\. {re.escape(env['working_dir'])}$", dockerfile, re.M)
    images = {c["image"] for c in pod_containers(rayjob()).values()}
    assert len(images) == 1, "head, workers and submitter should share the lpray image"


# ---------------------------------------------------------------- what the files point at


def test_referenced_experiment_files_exist() -> None:
    """Entrypoints and configs named anywhere in cluster/ or the guide must be in the repo."""
    referenced: dict[str, Path] = {}
    for path in text_files():
        for ref in re.findall(r"\bexperiments/[\w./-]+\.(?:py|ya?ml)\b", path.read_text()):
            referenced.setdefault(ref, path)
    assert "experiments/submit_pipeline.py" in referenced
    assert "experiments/submit_train.py" in referenced
    missing = {
        ref: str(src.relative_to(ROOT))
        for ref, src in referenced.items()
        if not (ROOT / ref).is_file()
    }
    assert not missing, f"referenced but not in the repo: {missing}"


def test_guide_names_only_cluster_files_that_exist() -> None:
    text = GUIDE.read_text()
    named = set(re.findall(r"(?<![\w.-])cluster/[\w.-]+\b", text))
    assert {"cluster/aws.yaml", "cluster/gcp.yaml", "cluster/kuberay-rayjob.yaml"} <= named
    assert all((ROOT / n).is_file() for n in named), named


def installed_extras(text: str) -> list[str]:
    """Extras named on lpray in pip specs: `lpray[x]`, `.[x]`, `/lpray[x]`."""
    extras = []
    for group in re.findall(r"(?:\blpray|(?<![\w])\.|/lpray)\[([^\]]*)\]", text):
        extras += [e.strip() for e in group.split(",") if e.strip()]
    return extras


def test_extras_named_in_cluster_files_exist_in_pyproject() -> None:
    assert installed_extras('pip install "lpray[dev, gpu]" -e ".[docs]"') == ["dev", "gpu", "docs"]
    defined = set(pyproject()["project"].get("optional-dependencies", {}))
    for path in text_files():
        unknown = set(installed_extras(path.read_text())) - defined
        assert not unknown, (path, unknown)


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_installs_lpray_from_the_uploaded_checkout_with_dali(name: str) -> None:
    """The plain install brings DALI (a base dependency on Linux x86_64), so no extra is needed."""
    deps = pyproject()["project"]["dependencies"]
    assert any(d.startswith("nvidia-dali") and "x86_64" in d for d in deps)
    config = load(LAUNCHERS[name])
    installs = [c for c in config["setup_commands"] if re.search(r"\bpip install\b", c)]
    targets = {r for r, local in config["file_mounts"].items() if local == "."}
    assert targets, "the checkout is not uploaded"
    assert any(any(t in c for t in targets) for c in installs), installs


def test_images_and_ray_versions_match_the_pinned_ray() -> None:
    import ray
    from packaging.specifiers import SpecifierSet

    (ray_dep,) = [d for d in pyproject()["project"]["dependencies"] if d.startswith("ray[")]
    pin = SpecifierSet(ray_dep.split("]", 1)[1])
    assert ray.__version__ in pin
    tags = []
    for path in cluster_files():
        tags += re.findall(r"rayproject/ray:(\d+\.\d+\.\d+)", path.read_text())
    assert tags
    assert all(t in pin for t in tags), tags
    assert rayjob()["spec"]["rayClusterSpec"]["rayVersion"] in pin
