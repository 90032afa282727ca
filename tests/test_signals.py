"""Signals and lost Ray: SIGTERM stops any command as Ctrl-C does, a sweep stopped at any moment resumes,
an address that is not Ray fails at once, a lost head is said so, and genre's old Ray sessions go."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest

from data_pipeline.loopback import RAY_CLUSTER_MODE_VARIABLE
from data_pipeline.ray_sessions import LATEST_LINK, OWN_MARK, Session, prune_sessions, sessions_to_remove
from genre.cli import EXIT_CLUSTER_LOST, EXIT_INTERRUPTED, EXIT_USER_ERROR, main
from genre.cli.signals import Terminated, sigterm_as_interrupt, sigterm_received
from genre.sweep.driver import TUNE_EXPERIMENT_STATE
from tests.ray_nodes import (
    RAY_CLI,
    TreeSampler,
    free_port,
    kill_nodes,
    node_ports,
    ray_environment,
    short_temp_dir,
)

GENRE = [sys.executable, "-m", "genre"]
# What Ray's C++ signal handler prints (absl's failure handler), and Python's crash.
RAY_STACK_LINES = ("SIGTERM received", "PC: @", "Traceback")


class Descendants(TreeSampler):
    """Every process below `root` seen while the `with` block runs (sampled every 50 ms)."""

    def __init__(self, root: int) -> None:
        super().__init__(psutil.Process(root), every_s=0.05)
        self.seen: dict[int, psutil.Process] = {}

    def sample(self) -> None:
        self.seen.update({p.pid: p for p in self.root.children(recursive=True)})

    def grandchildren(self) -> list[psutil.Process]:
        """Processes started by the root's children (a raylet's agents)."""
        with contextlib.suppress(psutil.Error):
            children = {p.pid for p in self.root.children()}
            return [p for p in self.root.children(recursive=True) if p.pid not in children]
        return []

    def alive_after(self, seconds: float) -> list[str]:
        _, alive = psutil.wait_procs(list(self.seen.values()), timeout=seconds)
        return [f"{p.pid} {p.name()}" for p in alive if _still_running(p)]


def _still_running(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return process.status() != psutil.STATUS_ZOMBIE
    return False


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def assert_clean_stop(stderr: str) -> None:
    for marker in RAY_STACK_LINES:
        assert marker not in stderr, stderr[-3000:]


# --- item 3: an address where something listens that is not Ray ---------------------------------------


@pytest.fixture
def http_server() -> Iterator[str]:
    """`python -m http.server` on a loopback port: it accepts TCP, and answers HTTP/1 only."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _accepts(port), 30, "http.server never listened")
        yield f"127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("command", ["sweep", "prepare"])
def test_an_address_that_is_not_ray_fails_within_30_s_in_one_line(http_server, tiny_audio, tmp_path, command):
    # Before: the TCP check passed and Ray's connect retried for minutes (still at it after 200 s).
    source = tiny_audio if command == "prepare" else tmp_path / "data"
    started = time.monotonic()
    run = subprocess.run(
        [*GENRE, command, str(source), str(tmp_path / "out"), "--address", http_server],
        capture_output=True, text=True, timeout=90, env=ray_environment(),
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert run.returncode == EXIT_USER_ERROR, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"genre {command}: error: no Ray cluster answers at '{http_server}'"), lines
    assert "accepts connections but is not Ray" in lines[0] and "HTTP/2" in lines[0], lines
    assert not (tmp_path / "out").exists()


# --- item 9: SIGTERM before Ray, while a command waits on a port ---------------------------------------


@pytest.mark.parametrize("command", ["sweep", "prepare"])
def test_sigterm_while_a_command_waits_on_a_port_stops_it_as_ctrl_c_does(tiny_audio, tmp_path, command):
    # A server that accepts connections and never answers: the command waits on its gRPC answer.
    # Before: SIGTERM there ended the process by the signal (143), with no line of genre's.
    silent = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    arguments = {
        "sweep": ["sweep", str(tmp_path / "data"), str(tmp_path / "run")],
        "prepare": ["prepare", str(tiny_audio), str(tmp_path / "data")],
    }[command]
    process = subprocess.Popen(
        [*GENRE, *arguments, "--address", address], env=ray_environment(), stderr=subprocess.PIPE, text=True
    )
    with silent:
        silent.settimeout(120)
        connections = [silent.accept()[0] for _ in range(2)]  # the TCP check's, then gRPC's
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        for connection in connections:
            connection.close()
    assert time.monotonic() - signalled < 10
    assert process.returncode == EXIT_INTERRUPTED, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == f"genre {command}: interrupted (SIGTERM)", stderr[-3000:]
    assert_clean_stop(stderr)


# --- items 9 and 13: SIGTERM while genre's own Ray starts -----------------------------------------------


@pytest.mark.ray  # a `genre prepare` process that starts its own Ray
def test_sigterm_while_ray_starts_stops_prepare_and_every_ray_process_it_began(tiny_audio, tmp_path):
    # Before: exit 15 (Ray's handler), C++ stack lines, and the raylet's agents up for about a minute.
    ray_tmp = short_temp_dir()
    out = tmp_path / "work"
    out.mkdir()
    process = subprocess.Popen(
        [*GENRE, "prepare", str(tiny_audio), str(out / "data")],
        env=ray_environment(RAY_TMPDIR=ray_tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with Descendants(process.pid) as family:
            # The raylet's agents (its children) are up: Ray's start is in its last stretch.
            wait_until(lambda: family.grandchildren(), 240, "Ray's agents never started")
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            _, stderr = process.communicate(timeout=120)
        assert time.monotonic() - signalled < 30
        assert process.returncode == EXIT_INTERRUPTED, stderr[-3000:]
        assert stderr.strip().splitlines()[-1] == "genre prepare: interrupted (SIGTERM)", stderr[-3000:]
        assert_clean_stop(stderr)
        assert family.alive_after(15) == []
        assert list(out.iterdir()) == []
    finally:
        process.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_sigterm_that_lands_in_a_weakref_callback_still_stops_the_command():
    # The CI run that exited 0 after SIGTERM: the handler ran inside Ray's WeakValueDictionary callback,
    # where Python prints "Exception ignored" and drops the raise.
    class Held:
        pass

    def signalled_inside_the_callback(_: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs here, inside the callback

    held = Held()
    watched = weakref.ref(held, signalled_inside_the_callback)
    callers_handler = signal.getsignal(signal.SIGTERM)  # pytest's, or Ray's when an earlier test ran ray.init
    with sigterm_as_interrupt(), pytest.raises(Terminated):
        del held
        for _ in range(100):  # the command's own code, where the signal must land again
            time.sleep(0.01)
    assert sigterm_received() and watched() is None
    assert signal.getsignal(signal.SIGTERM) is callers_handler  # the caller's handler is back


def test_a_ctrl_c_while_ray_starts_is_held_until_the_start_returns_and_a_second_one_is_not(capsys):
    from data_pipeline.ray_connect import _ctrl_c_held

    started, callers = [], signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), _ctrl_c_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # Python runs the handler here: it holds the Ctrl-C
        started.append("the rest of Ray's start ran")
    assert started and signal.getsignal(signal.SIGINT) is callers
    said = capsys.readouterr().err
    assert said == "interrupted: stopping as soon as Ray's start returns (Ctrl-C again: now)\n"

    with pytest.raises(KeyboardInterrupt), _ctrl_c_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)  # the user presses it again: no more waiting
        time.sleep(0.2)
        started.append("never")
    assert started == ["the rest of Ray's start ran"]


def test_a_ctrl_c_that_the_caller_ignores_stays_ignored_while_ray_starts():
    from data_pipeline.ray_connect import _ctrl_c_held

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a job started in the background
    try:
        with _ctrl_c_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# --- items 8 and 9: SIGTERM as a sweep starts its trials, then --resume -----------------------------------


def test_the_experiment_state_pattern_is_tunes():
    from ray.tune.execution.tune_controller import TuneController

    assert TuneController.CKPT_FILE_TMPL.format("*") == TUNE_EXPERIMENT_STATE


@pytest.mark.ray  # a `genre sweep` with its own Ray, then --resume on the session's
def test_sigterm_before_any_trial_was_saved_stops_cleanly_and_resume_starts_the_sweep_afresh(
    tiny_dataset, tmp_path, capsys
):
    # Before: exit 15 with C++ stack lines; OUT held tune/tuner.pkl and no trial state, --resume
    # crashed (KeyError: 'model') and a new sweep was refused ("pass --resume"), every time.
    out, ray_tmp = tmp_path / "run", short_temp_dir()
    sweep = ["sweep", str(tiny_dataset), str(out), "--models", "cnn3", "--epochs", "1", "--pretrained", "no"]
    process = subprocess.Popen(
        [*GENRE, *sweep, "--seed", "5", "--batch-size", "8"],
        env=ray_environment(RAY_TMPDIR=ray_tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with Descendants(process.pid) as family:
            # The moment of the report: the Tuner is written, Tune has not saved its trials yet.
            wait_until((out / "tune" / "tuner.pkl").is_file, 300, "the sweep never wrote its Tuner")
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=120)
        assert process.returncode == EXIT_INTERRUPTED, stderr[-3000:]
        assert stderr.strip().splitlines()[-2:] == [
            "genre sweep: to continue, run the same command with --resume",
            "genre sweep: interrupted (SIGTERM)",
        ], stderr[-3000:]
        assert_clean_stop(stderr)
        assert family.alive_after(15) == []
        assert list((out / "tune").glob(TUNE_EXPERIMENT_STATE)) == []  # the state SIGTERM left there
    finally:
        process.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)

    capsys.readouterr()
    assert main([*sweep, "--resume"]) == 0  # on the test session's Ray: the options come from sweep.yaml
    printed = capsys.readouterr().out
    assert "was stopped before it saved any trial: starting it afresh" in printed
    table = pd.read_csv(out / "results.csv")
    assert list(table["status"]) == ["completed"] and list(table["model"]) == ["cnn3"]
    assert list(table["seed"]) == [5]


# --- item 12: the head of a joined cluster lost mid-sweep -------------------------------------------------


@pytest.mark.ray  # a `ray start` head and a `genre sweep --address` joining it
def test_a_head_lost_mid_sweep_is_a_line_naming_it_and_how_to_resume(tiny_dataset, tmp_path):
    # Before: 60 s, then exit 1 after one Ray C++ line, nothing of genre's and no --resume hint.
    temp, port = short_temp_dir(), free_port()
    head = [RAY_CLI, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
            *node_ports()]  # fmt: skip
    on_loopback = ray_environment(**{RAY_CLUSTER_MODE_VARIABLE: "0"})
    try:
        subprocess.run(head, env=on_loopback, capture_output=True, check=True, timeout=300)
        paused, out = tmp_path / "worker.pid", tmp_path / "run"
        command = [*GENRE, "sweep", str(tiny_dataset), str(out), "--models", "cnn3", "--epochs", "1",
                   "--pretrained", "no", "--address", f"127.0.0.1:{port}",
                   "--inject-fault", f"cnn3=pause@0:0:{paused}"]  # fmt: skip
        # Ray's driver ends itself 20 s after the GCS goes (60 s by default); genre says so before
        # (lost after 10 s, the last resort after 15 s: Tune is stuck in a call waiting on the GCS).
        environment = ray_environment(RAY_gcs_rpc_server_reconnect_timeout_s="20")
        process = subprocess.Popen(
            command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        wait_until(paused.is_file, 300, "the trial never reached its first step")
        kill_nodes(temp)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == EXIT_CLUSTER_LOST, stderr[-3000:]
        lines = stderr.strip().splitlines()
        assert lines[-2] == (
            "genre sweep: once the cluster answers again, run the same command with --resume "
            "(finished trials are kept)"
        ), lines[-5:]
        assert lines[-1].startswith(
            f"genre sweep: error: the Ray cluster at '127.0.0.1:{port}' stopped answering"
        ), lines[-5:]
        assert "its head is gone" in lines[-1]
        assert "Traceback" not in stderr, stderr[-3000:]
    finally:
        kill_nodes(temp)
        shutil.rmtree(temp, ignore_errors=True)


# --- item 14: genre's own old Ray sessions are removed ------------------------------------------------------


def _session(folder: Path, stamp: str, pid: int, own: bool = True) -> Path:
    path = folder / f"session_2026-01-{stamp}_000000_{pid}"
    (path / "logs").mkdir(parents=True)
    (path / "logs" / "raylet.out").write_text("log\n")
    if own:
        (path / OWN_MARK).write_text(f"{pid}\n")
    return path


def _reaped_pid() -> int:
    """The pid of a process that has ended (and been waited for)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_genres_own_sessions_beyond_the_latest_few_are_removed_never_a_live_one(tmp_path):
    dead, alive = _reaped_pid(), os.getpid()
    old_own = [_session(tmp_path, f"0{day}_10-00-00", dead) for day in range(1, 7)]
    live_own = _session(tmp_path, "01_09-00-00", alive)  # older than all, its command still running
    cluster = _session(tmp_path, "01_08-00-00", dead, own=False)  # a `ray start` cluster's
    current = _session(tmp_path, "09_10-00-00", alive)
    (tmp_path / LATEST_LINK).symlink_to(current)
    (tmp_path / "ray_current_cluster").write_text("127.0.0.1:6379\n")

    removed = prune_sessions(current, keep=3)

    # Kept: the current one and the two latest before it; the live one; the cluster's; Ray's own files.
    assert sorted(removed) == sorted(old_own[:4])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in (*old_own[4:], live_own, cluster, current)] + [LATEST_LINK, "ray_current_cluster"]
    )


def test_the_session_that_rays_latest_link_names_is_never_removed(tmp_path):
    dead = _reaped_pid()
    named = tmp_path / "session_2026-01-01_10-00-00_000000_1"
    sessions = [
        Session(named, dead, True),
        *(Session(tmp_path / f"session_2026-01-0{d}_10-00-00_000000_{dead}", dead, True) for d in (2, 3)),
    ]
    current = sessions[-1].path
    (tmp_path / LATEST_LINK).symlink_to(named)  # e.g. another process's start, newer than ours
    assert sessions_to_remove(sessions, current, keep=1, alive=lambda pid: False) == [sessions[1].path]
