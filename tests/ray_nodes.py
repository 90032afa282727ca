"""Ray nodes started the way users start them (`ray start`), beside the test session's own Ray."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from data_pipeline.loopback import RAY_CLUSTER_MODE_VARIABLE

REPO = Path(__file__).resolve().parent.parent
RAY_CLI = str(Path(sys.executable).parent / "ray")
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_environment(**overrides: str) -> dict[str, str]:
    """This environment's `ray` and `python` first on PATH, as the image's would be on a cluster."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **overrides,
    }


def short_temp_dir() -> str:
    # Ray's Unix sockets live under it, and socket paths are limited to 107 bytes.
    return tempfile.mkdtemp(prefix="genre-ray-", dir="/tmp")


def node_ports() -> list[str]:
    """Ports of their own for one more node: the test session's Ray holds Ray's defaults."""
    return [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]


def wait_for_http(url: str, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return True
        except OSError:
            time.sleep(0.2)  # a refused connection on loopback costs nothing
    return False


def processes_of(temp_dir: str) -> list[psutil.Process]:
    """Every process of the Ray nodes using `temp_dir`, their children included.

    Ray's agents rename themselves ("ray::DashboardAgent") and no longer name the folder: they are
    found as children of the raylet that does.
    """
    roots = []
    for process in psutil.process_iter(["cmdline"]):
        if temp_dir in " ".join(process.info["cmdline"] or []):
            roots.append(process)
    family = {p.pid: p for p in roots}
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            family.update({child.pid: child for child in root.children(recursive=True)})
    return list(family.values())


def listening_addresses(processes: list[psutil.Process]) -> set[tuple[str, int]]:
    # One read of the machine's socket tables for all of them: a read per process parses the whole
    # tables each time, and costs seconds of CPU per minute with a sweep's fifty processes.
    pids = {process.pid for process in processes}
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }


class TreeSampler:
    """Samples a process and its descendants in a thread, every `every_s`, while the `with` block runs;
    a subclass says what each sample records (`sample`)."""

    def __init__(self, root: psutil.Process | None = None, every_s: float = 0.5) -> None:
        self.root, self.every_s = root or psutil.Process(), every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            with contextlib.suppress(psutil.Error):  # a process that ended between two calls
                self.sample()

    def sample(self) -> None:
        raise NotImplementedError


class ListeningSampler(TreeSampler):
    """Every address that a process or its descendants listen on while the `with` block runs."""

    def __init__(self, root: psutil.Process | None = None, every_s: float = 0.5) -> None:
        super().__init__(root, every_s)
        self.seen: set[tuple[str, int]] = set()

    def sample(self) -> None:
        self.seen |= listening_addresses([self.root, *self.root.children(recursive=True)])


def kill_nodes(temp_dir: str) -> None:
    """Stop the nodes using `temp_dir` only: `ray stop` would stop the test session's Ray as well."""
    for process in processes_of(temp_dir):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def start_local_head(temp_dir: str, num_cpus: int = 2) -> tuple[str, str]:
    """`cluster/local-head.sh` on free ports; returns (job API URL, GCS address)."""
    gcs, dashboard = free_port(), free_port()
    env = ray_environment()
    env.pop(RAY_CLUSTER_MODE_VARIABLE, None)  # the script must keep the head on loopback itself
    subprocess.run(
        ["bash", str(REPO / "cluster" / "local-head.sh"), f"--port={gcs}", f"--dashboard-port={dashboard}",
         f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", *node_ports()],
        capture_output=True, env=env, check=True, timeout=180,
    )  # fmt: skip
    return f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}"


def can_hide_a_folder_from_a_node() -> bool:
    """Whether this machine lets a process mount over a folder in a mount namespace of its own."""
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "probe", folder],
            capture_output=True,
        )
    return probe.returncode == 0
