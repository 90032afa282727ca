"""The cluster path: manifests that agree with the pins, and a real `ray job submit` to a local head."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parent.parent
RAY_CLI = str(Path(sys.executable).parent / "ray")
# GPUs per instance type used in the launcher YAML.
GPUS_PER_INSTANCE = {"g5.xlarge": 1, "g5.12xlarge": 4, "p4d.24xlarge": 8}


def documents() -> list[tuple[Path, dict]]:
    found = []
    for path in [*sorted((REPO / "cluster").rglob("*.yaml")), REPO / "jobs" / "runtime_env.yaml"]:
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def walk(node, key):
    """Every value stored under `key` anywhere in a parsed YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)


def pinned_dependencies() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {d for d in project["dependencies"] if not d.startswith("ray[")}


def test_every_manifest_parses_and_uses_the_pinned_ray_version():
    docs = documents()
    assert len(docs) >= 4
    images = [image for _, doc in docs for image in walk(doc, "image")]
    assert images and all(image.startswith(f"rayproject/ray:{ray.__version__}-") for image in images)
    assert all(v == ray.__version__ for _, doc in docs for v in walk(doc, "rayVersion"))


def test_gpu_counts_agree_between_ray_and_kubernetes():
    groups = [g for _, doc in documents() for specs in walk(doc, "workerGroupSpecs") for g in specs]
    assert groups
    for group in groups:
        limits = [c["resources"]["limits"] for c in group["template"]["spec"]["containers"]]
        assert int(group["rayStartParams"]["num-gpus"]) == sum(
            int(limit.get("nvidia.com/gpu", 0)) for limit in limits
        )
        assert any(t["key"] == "nvidia.com/gpu" for t in group["template"]["spec"]["tolerations"])
    launcher = yaml.safe_load((REPO / "cluster" / "launcher" / "aws-gpu.yaml").read_text())
    for node_type in launcher["available_node_types"].values():
        instance = node_type["node_config"]["InstanceType"]
        assert node_type["resources"].get("GPU", 0) == GPUS_PER_INSTANCE.get(instance, 0)


def test_job_runtime_environments_pin_what_pyproject_pins():
    runtime_env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    assert set(runtime_env["pip"]["packages"]) == pinned_dependencies()
    rayjob = yaml.safe_load((REPO / "cluster" / "kuberay" / "rayjob.yaml").read_text())
    assert set(yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["pip"]["packages"]) == pinned_dependencies()


def test_nothing_listens_on_a_public_address_by_default():
    assert "--dashboard-host=127.0.0.1" in (REPO / "cluster" / "local-head.sh").read_text()
    assert "--node-ip-address=127.0.0.1" in (REPO / "cluster" / "local-head.sh").read_text()
    launcher = yaml.safe_load((REPO / "cluster" / "launcher" / "aws-gpu.yaml").read_text())
    assert any("--dashboard-host=127.0.0.1" in c for c in launcher["head_start_ray_commands"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def local_head():
    """A Ray head on loopback with free ports, as `cluster/local-head.sh` starts one; stopped after."""
    gcs, dashboard = free_port(), free_port()
    # A short folder: Ray's Unix sockets live under it, and socket paths are limited to 107 bytes.
    temp = tempfile.mkdtemp(prefix="genre-ray-", dir="/tmp")
    # Jobs run `python` from PATH: this environment's, as the image's would be on a cluster.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [RAY_CLI, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
         # Its own agent port: the test session's Ray already holds the default one (52365).
         f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp}"],
        capture_output=True, env=env, check=True, timeout=180,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        subprocess.run(["pkill", "-9", "-f", temp], check=False)
        pytest.fail("the local Ray head did not start")
    yield address
    # Stop this head's processes only (they all name its folder): `ray stop` would stop every Ray
    # on the machine, the test session's included.
    subprocess.run(["pkill", "-9", "-f", temp], check=False)
    shutil.rmtree(temp, ignore_errors=True)


def test_a_sweep_submitted_with_ray_job_submit_writes_its_results(local_head, tiny_dataset, tmp_path):
    # The documented runtime environment, minus pip: this head already runs in genre's environment.
    runtime_env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    runtime_env.pop("pip")
    (tmp_path / "runtime_env.yaml").write_text(yaml.safe_dump(runtime_env))
    out = tmp_path / "run"
    command = [
        RAY_CLI, "job", "submit", "--address", local_head, "--working-dir", str(REPO),
        "--runtime-env", str(tmp_path / "runtime_env.yaml"), "--",
        "bash", "jobs/sweep.sh", str(tiny_dataset), str(out), "--models", "cnn3", "--epochs", "1",
        "--pretrained", "no",
    ]  # fmt: skip
    for _ in range(12):
        job = subprocess.run(command, capture_output=True, text=True, timeout=600)
        # A fresh head answers before its job agent is up, and says to try again later.
        if "No available agent" not in job.stderr:
            break
        time.sleep(5)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout
    table = pd.read_parquet(out / "results.parquet")
    assert list(table["model"]) == ["cnn3"] and table.loc[0, "status"] == "completed"
