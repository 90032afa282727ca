"""The cluster path for real: a local head with token authentication, `ray job submit` to it, and
clusters of `ray start` nodes. What the cluster files say: tests/test_cluster_files.py.
"""

import secrets
import shutil
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pandas as pd
import pytest

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

# Ray's token authentication: the mode ("token") and the token itself.
RAY_AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_VARIABLE = "RAY_AUTH_TOKEN"
RUNTIME_ENV = REPO / "jobs" / "runtime_env.yaml"


@pytest.fixture(scope="module")
def local_head():
    """A head started by `cluster/local-head.sh` on free loopback ports, with a token; stopped after."""
    temp = short_temp_dir()
    token = secrets.token_hex(32)
    # Given as a user may give it, so that the script leaves ~/.ray/auth_token alone; set in this
    # process only while the head starts (ray_environment copies it), and read by no Ray here.
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv(RAY_AUTH_TOKEN_VARIABLE, token)
        job_api, gcs = start_local_head(temp)
    # A path the head answers without the token (its version, the usual probe, needs it).
    if not wait_for_http(f"{job_api}/api/authentication_mode"):
        kill_nodes(temp)
        shutil.rmtree(temp, ignore_errors=True)
        pytest.fail("the local Ray head did not start")
    yield SimpleNamespace(job_api=job_api, gcs=gcs, temp=temp, token=token)
    kill_nodes(temp)
    shutil.rmtree(temp, ignore_errors=True)


def client_environment(token: str | None) -> dict[str, str]:
    """A Ray client's environment: with the token (and the mode that makes the CLI send it), or none."""
    environment = ray_environment()
    for variable in (RAY_AUTH_MODE_VARIABLE, RAY_AUTH_TOKEN_VARIABLE, "RAY_AUTH_TOKEN_PATH"):
        environment.pop(variable, None)
    if token is not None:
        environment.update({RAY_AUTH_MODE_VARIABLE: "token", RAY_AUTH_TOKEN_VARIABLE: token})
    return environment


def submit(head: SimpleNamespace, token: str | None, *arguments: str) -> subprocess.CompletedProcess:
    """`ray job submit` to the head's job API, as a user runs it; waits for the job to end."""
    command = [RAY_CLI, "job", "submit", "--address", head.job_api, *arguments]
    environment = client_environment(token)
    for _ in range(12):
        job = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
        # A fresh head answers before its job agent is up, and says to try again later.
        if "No available agent" not in job.stderr:
            return job
        time.sleep(5)
    return job


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
        [sys.executable, "-m", "genre", command, str(source), str(tmp_path / "out"), *options],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert run.returncode == 2, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"genre {command}: error: no Ray cluster answers at "), lines
    assert dead in lines[0] and "Connection refused" in lines[0]


def test_a_driver_joins_a_loopback_head_from_a_shell_without_rays_single_node_mode(
    local_head, tiny_audio, tmp_path
):
    # What a user does after cluster/local-head.sh: `genre prepare --address 127.0.0.1:PORT` from a
    # shell that lacks the head's RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0. Without it Ray's driver
    # took the machine's routable address and waited minutes for a GCS on loopback.
    environment = client_environment(local_head.token)
    environment.pop(RAY_CLUSTER_MODE_VARIABLE, None)
    out = tmp_path / "data"
    command = [
        sys.executable,
        "-m",
        "genre",
        "prepare",
        str(tiny_audio),
        str(out),
        "--address",
        local_head.gcs,
    ]
    run = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "manifest.json").is_file()


@pytest.mark.parametrize(("token", "refusal"), [(None, "Unauthorized"), ("not-the-token", "Forbidden")],
                         ids=["without-token", "wrong-token"])  # fmt: skip
def test_the_local_head_refuses_a_job_without_its_token(local_head, tmp_path, token, refusal):
    ran = tmp_path / "ran"
    job = submit(local_head, token, "--", "touch", str(ran))
    assert job.returncode != 0, job.stdout[-2000:]
    assert refusal in job.stderr, job.stderr[-3000:]
    assert not ran.exists()


def test_the_local_head_runs_a_job_submitted_with_its_token(local_head, tmp_path):
    ran = tmp_path / "ran"
    job = submit(local_head, local_head.token, "--", "touch", str(ran))
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout and ran.exists()


def test_a_sweep_submitted_with_ray_job_submit_writes_its_results(local_head, tiny_dataset, tmp_path):
    # The documented runtime environment as it is: this head, like the image, has genre's dependencies.
    out = tmp_path / "run"
    job = submit(
        local_head, local_head.token, "--working-dir", str(REPO), "--runtime-env", str(RUNTIME_ENV), "--",
        "bash", "jobs/sweep.sh", str(tiny_dataset), str(out), "--models", "cnn3", "--epochs", "1",
        "--pretrained", "no",
    )  # fmt: skip
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
    command = [sys.executable, "-m", "genre", "sweep", str(data), str(out), "--address", cluster.address,
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
        command = [sys.executable, "-m", "genre", "sweep", str(tiny_dataset), str(out), "--address", gcs,
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
        # A refusal would follow the plan at once; the sweep's exit code below says it ran in the end.
        time.sleep(2)
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
