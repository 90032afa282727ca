"""The cluster path: manifests that agree with the pins, and a real `ray job submit` to a local head."""

import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import ray
import yaml

from data_pipeline.loopback import RAY_CLUSTER_MODE_VARIABLE
from tests.ray_nodes import (
    LOOPBACK,
    RAY_CLI,
    REPO,
    can_hide_a_folder_from_a_node,
    free_port,
    kill_nodes,
    listening_addresses,
    node_ports,
    processes_of,
    ray_environment,
    short_temp_dir,
    start_local_head,
    wait_for_http,
)

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


@pytest.fixture(scope="module")
def local_head():
    """A head started by `cluster/local-head.sh` on free loopback ports; stopped after."""
    temp = short_temp_dir()
    job_api, gcs = start_local_head(temp)
    if not wait_for_http(f"{job_api}/api/version"):
        kill_nodes(temp)
        pytest.fail("the local Ray head did not start")
    yield SimpleNamespace(job_api=job_api, gcs=gcs, temp=temp)
    kill_nodes(temp)
    shutil.rmtree(temp, ignore_errors=True)


def test_the_local_head_listens_on_loopback_only(local_head):
    addresses = listening_addresses(processes_of(local_head.temp))
    # GCS, raylet (node manager, object manager), dashboard and its agents, the client server.
    assert len(addresses) >= 6, addresses
    assert {ip for ip, _ in addresses} <= LOOPBACK, addresses


@pytest.mark.parametrize(
    ("command", "how"), [("sweep", "--address"), ("prepare", "RAY_ADDRESS")], ids=["flag", "variable"]
)
def test_a_cluster_address_where_nothing_answers_fails_at_once_with_one_line(
    tiny_audio, tiny_dataset, tmp_path, command, how
):
    dead = f"127.0.0.1:{free_port()}"
    source = tiny_dataset if command == "sweep" else tiny_audio
    options = ["--address", dead] if how == "--address" else []
    env = ray_environment(**({"RAY_ADDRESS": dead} if how == "RAY_ADDRESS" else {}))
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "genre.cli", command, str(source), str(tmp_path / "out"), *options],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert run.returncode == 2, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"genre {command}: error: no Ray cluster answers at "), lines
    assert dead in lines[0] and "Connection refused" in lines[0]


def test_a_sweep_submitted_with_ray_job_submit_writes_its_results(local_head, tiny_dataset, tmp_path):
    # The documented runtime environment, minus pip: this head already runs in genre's environment.
    runtime_env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    runtime_env.pop("pip")
    (tmp_path / "runtime_env.yaml").write_text(yaml.safe_dump(runtime_env))
    out = tmp_path / "run"
    command = [
        RAY_CLI, "job", "submit", "--address", local_head.job_api, "--working-dir", str(REPO),
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


def routable_address() -> str:
    """This machine's address as Ray picks it for a node (a UDP connect sends no packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("8.8.8.8", 80))
        return probe.getsockname()[0]


@pytest.fixture(scope="module")
def two_nodes_one_blind(tmp_path_factory):
    """A cluster of two nodes where the second does not see the head's folder `head-only`.

    The second node runs in a mount namespace of its own with an empty tmpfs over that folder: the
    situation of a run folder on the head's own disk. Both nodes live on this machine (cluster mode,
    on its routable address, for the length of these tests).
    """
    if not can_hide_a_folder_from_a_node():
        pytest.skip("hiding a folder from a node needs unshare and mount (root)")
    root = tmp_path_factory.mktemp("two-nodes")
    head_only = root / "head-only"
    head_only.mkdir()
    temp = short_temp_dir()
    gcs = f"{routable_address()}:{free_port()}"
    # Cluster mode, so that a second node may join; RAY_ADDRESS, so that the processes of this
    # cluster never ask which of the machine's two Rays (this one, the test session's) they are in.
    env = ray_environment(**{RAY_CLUSTER_MODE_VARIABLE: "1", "RAY_ADDRESS": gcs})
    # Two CPUs each: the CPU genre keeps free for Ray Data must be whole on one node.
    head = [RAY_CLI, "start", "--head", f"--port={gcs.rsplit(':', 1)[1]}", "--num-cpus=2",
            f"--temp-dir={temp}", f"--dashboard-port={free_port()}", *node_ports()]  # fmt: skip
    blind = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs genre-hidden "$1" && shift && exec "$@"', "sh", str(head_only),
             RAY_CLI, "start", f"--address={gcs}", "--num-cpus=2", *node_ports()]  # fmt: skip
    try:
        for command in (head, blind):
            subprocess.run(command, env=env, capture_output=True, check=True, timeout=180)
        yield SimpleNamespace(address=gcs, root=root, head_only=head_only, env=env)
    finally:
        kill_nodes(temp)
        shutil.rmtree(temp, ignore_errors=True)


def cluster_sweep(cluster, data, out) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "genre.cli", "sweep", str(data), str(out), "--address", cluster.address,
               "--models", "cnn3", "--epochs", "1", "--pretrained", "no"]  # fmt: skip
    return subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=600)


def test_a_run_folder_one_node_cannot_see_is_refused_before_any_trial(two_nodes_one_blind, tiny_dataset):
    out = two_nodes_one_blind.head_only / "run"
    sweep = cluster_sweep(two_nodes_one_blind, tiny_dataset, out)
    assert sweep.returncode == 2, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    assert "same on all 2 nodes" in sweep.stdout
    error = sweep.stderr.strip().splitlines()[-1]
    assert error.startswith(f"genre sweep: error: the run storage '{out}' (OUT unless --storage")
    assert "do not share" in error and "--storage s3://" in error
    assert not (out / "tune").exists() and not (out / "results.parquet").exists()


def test_a_run_folder_every_node_sees_runs_the_sweep_across_the_nodes(two_nodes_one_blind, tiny_dataset):
    out = two_nodes_one_blind.root / "shared" / "run"
    sweep = cluster_sweep(two_nodes_one_blind, tiny_dataset, out)
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    table = pd.read_parquet(out / "results.parquet")
    assert table.loc[0, "status"] == "completed", table.loc[0, "error"]


def test_a_sweep_on_a_head_without_cpus_waits_for_a_node_and_then_runs(tiny_dataset, tmp_path):
    # The shipped clusters start so: a 0-CPU head, workers added later (by an autoscaler, or by hand).
    temp = short_temp_dir()
    gcs = f"{routable_address()}:{free_port()}"
    env = ray_environment(**{RAY_CLUSTER_MODE_VARIABLE: "1", "RAY_ADDRESS": gcs})
    head = [RAY_CLI, "start", "--head", f"--port={gcs.rsplit(':', 1)[1]}", "--num-cpus=0",
            f"--temp-dir={temp}", f"--dashboard-port={free_port()}", *node_ports()]  # fmt: skip
    out = tmp_path / "run"
    sweep = None
    try:
        subprocess.run(head, env=env, capture_output=True, check=True, timeout=180)
        command = [sys.executable, "-m", "genre.cli", "sweep", str(tiny_dataset), str(out), "--address", gcs,
                   "--models", "cnn3", "--epochs", "1", "--pretrained", "no"]  # fmt: skip
        sweep = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines = []
        for line in sweep.stdout:
            lines.append(line)
            if line.startswith("sweep: "):
                break
        assert any("waits for a node that holds it" in line for line in lines), lines
        time.sleep(5)
        assert sweep.poll() is None  # waiting, not refused
        worker = [RAY_CLI, "start", f"--address={gcs}", "--num-cpus=2", *node_ports()]
        subprocess.run(worker, env=env, capture_output=True, check=True, timeout=180)
        rest, _ = sweep.communicate(timeout=600)
        assert sweep.returncode == 0, "".join(lines) + rest[-3000:]
        assert pd.read_parquet(out / "results.parquet").loc[0, "status"] == "completed"
    finally:
        if sweep is not None and sweep.poll() is None:
            sweep.kill()
        kill_nodes(temp)
        shutil.rmtree(temp, ignore_errors=True)
