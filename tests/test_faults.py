"""Faults injected for real: killed workers, sweeps and prepares, errors in trials, unwritable OUT."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from data_pipeline.loopback import RAY_CLUSTER_MODE_VARIABLE
from data_pipeline.manifest import is_dataset
from genre.cli import EXIT_SOME_TRIALS_FAILED, main
from genre.sweep.record import read_sweep_record
from genre.sweep.results import TABLE_COLUMNS
from genre.train.checkpoints import load_checkpoint
from tests.ray_nodes import (
    LOOPBACK,
    ListeningSampler,
    can_hide_a_folder_from_a_node,
    free_port,
    ray_environment,
    short_temp_dir,
)

GENRE = [sys.executable, "-m", "genre"]


def wait_for_file(path: Path, seconds: float = 300) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file():
            return int(path.read_text())
        time.sleep(0.05)
    raise TimeoutError(f"{path} never appeared")


def epochs_per_trial(out: Path) -> dict[str, list[int]]:
    history = pd.read_parquet(out / "history.parquet")
    return {model: sorted(group["epoch"].astype(int)) for model, group in history.groupby("model")}


def test_a_killed_worker_restarts_and_an_exception_leaves_an_error_row(tiny_dataset, tmp_path):
    """Two faults in two concurrent trials of one sweep: each trial ends as its own fault says.

    The train split streams from Ray Data (--train-in-memory-mib 0), split across the workers by
    Ray Data, and the trials train in bf16 on the CPU: a restarted worker must find both again.
    """
    pid_file, out = tmp_path / "worker.pid", tmp_path / "run"
    # 18 training segments in batches of 16: epoch 1, step 1 is the middle of cnn3's second epoch.
    killer = threading.Thread(target=lambda: os.kill(wait_for_file(pid_file), signal.SIGKILL), daemon=True)
    killer.start()
    faults = f"cnn3=pause@1:1:{pid_file},cnn4=raise@0:1"
    # Through the command, as a job runner sees it: one trial of two failed is a failed sweep.
    options = ["--models", "cnn3,cnn4", "--epochs", "3", "--amp", "bf16", "--train-in-memory-mib", "0",
               "--pretrained", "no", "--seed", "5", "--inject-fault", faults]  # fmt: skip
    code = main(["sweep", str(tiny_dataset), str(out), *options])
    killer.join(timeout=1)
    assert code == EXIT_SOME_TRIALS_FAILED
    table = pd.read_parquet(out / "results.parquet").set_index("model")

    assert table.loc["cnn3", "status"] == "completed", table.loc["cnn3", "error"]
    assert table.loc["cnn3", "amp"] == "bf16" and table.loc["cnn3", "test_segment_accuracy"] >= 0
    assert table.loc["cnn3", "retries"] == 1 and table.loc["cnn3", "epochs"] == 3
    # Epoch 0 was not trained again: the restart began at epoch 1, from epoch 0's checkpoint.
    assert epochs_per_trial(out)["cnn3"] == [0, 1, 2]

    assert table.loc["cnn4", "status"] == "error"
    # The innermost error of Ray's wrappers, in one line (tests/test_trial_config.py: the chain, and
    # what an out-of-memory error adds).
    assert (
        table.loc["cnn4", "error"]
        == "InjectedFailure: injected failure in cnn4 at epoch 0, step 1 (test hook)"
    )
    # Ray Train restarted the failing trial's workers once (--max-failures 1) before giving up.
    assert table.loc["cnn4", "retries"] == 1


def start_sweep(data: Path, out: Path, *options: str) -> subprocess.Popen:
    """`genre sweep` in a process of its own, its output into a file beside OUT (a pipe that no one
    reads while the test waits would fill, and block the sweep mid-write)."""
    command = [*GENRE, "sweep", str(data), str(out), *options]
    with sweep_log(out).open("a") as output:
        return subprocess.Popen(command, env=ray_environment(), stdout=output, stderr=subprocess.STDOUT)


def sweep_log(out: Path) -> Path:
    return out.parent / f"{out.name}.log"


def stop_and_wait(process: subprocess.Popen, sig: signal.Signals, log: Path | None = None) -> None:
    """Send `sig` to the process and wait until it and the local Ray it started are gone."""
    family = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(sig)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        printed = log.read_text()[-3000:] if log is not None else ""
        raise AssertionError(f"{process.args} outlived {sig.name} by 120 s\n{printed}") from None
    # Raylet and GCS follow their driver within a second or two; Ray's runtime-env and dashboard
    # agents outlive it by more than 30 s (seen with Ray 2.58): kill them rather than wait. The next
    # command starts a Ray of its own, so nothing waits on how the leftovers end.
    _, alive = psutil.wait_procs(family, timeout=2)
    for leftover in alive:
        leftover.kill()


def test_a_sweep_stopped_by_ctrl_c_then_killed_resumes_each_time_without_rerunning_anything(
    tiny_dataset, tmp_path, capsys
):
    """Ctrl-C (which must not wind trials down as if done), then SIGKILL (nothing runs after it)."""
    out, cnn3_paused, cnn4_paused = tmp_path / "run", tmp_path / "cnn3.pid", tmp_path / "cnn4.pid"
    # One trial at a time. cnn3 pauses once its second epoch is trained and validated but not yet
    # reported: its worker is ahead of the last checkpoint that Ray Train holds.
    faults = ["--inject-fault", f"cnn3=pause@1:end:{cnn3_paused},cnn4=pause@1:1:{cnn4_paused}"]
    first = start_sweep(tiny_dataset, out, "--models", "cnn3,cnn4", "--epochs", "2", "--pretrained", "no",
                        "--max-concurrent", "1", *faults)  # fmt: skip
    wait_for_file(cnn3_paused)
    stop_and_wait(first, signal.SIGINT, sweep_log(out))
    assert not (out / "results.parquet").exists()

    # --resume alone: the sweep's own options (2 epochs, not the default 15). cnn3 goes on from its
    # first epoch's checkpoint and finishes; cnn4 pauses in its second epoch and the sweep is killed.
    second = start_sweep(tiny_dataset, out, "--resume", *faults)
    wait_for_file(cnn4_paused)
    stop_and_wait(second, signal.SIGKILL, sweep_log(out))

    # One option that may change on --resume is applied and recorded. In this process, on the test
    # session's Ray: the killed sweep's Ray is gone, and OUT alone carries the sweep on.
    capsys.readouterr()
    code = main(["sweep", str(tiny_dataset), str(out), "--resume", "--max-failures", "2"])
    resumed = capsys.readouterr()
    assert code == 0, resumed.out[-3000:] + resumed.err[-3000:]
    assert "resuming with --max-failures 2 (the sweep had 1)" in resumed.out
    record = read_sweep_record(out)
    assert record.options["max_failures"] == 2
    assert record.resumed[-1]["changed"] == {"max_failures": [1, 2]}
    table = pd.read_parquet(out / "results.parquet").set_index("model")
    assert list(table.reset_index().columns) == TABLE_COLUMNS
    assert set(table["status"]) == {"completed"} and set(table["epochs"]) == {2}
    # Each started twice and went on from its checkpoint; cnn3, finished before the kill, was not
    # started a third time; no epoch was trained twice.
    assert table.loc["cnn3", "retries"] == 1 and table.loc["cnn4", "retries"] == 1
    assert epochs_per_trial(out) == {"cnn3": [0, 1], "cnn4": [0, 1]}
    assert_best_checkpoints_agree_with_table_and_history(out)


def assert_best_checkpoints_agree_with_table_and_history(out: Path) -> None:
    """best.pt, the table's best epoch and the history come from one timeline, restarts included."""
    table = pd.read_parquet(out / "results.parquet")
    history = pd.read_parquet(out / "history.parquet")
    for _, row in table.iterrows():
        best = load_checkpoint(out / row["checkpoint"])
        epochs = history[history["trial_id"] == row["trial_id"]].set_index("epoch")
        assert best["epoch"] == row["best_epoch"] == epochs["val_segment_accuracy"].idxmax()
        at_best = epochs.loc[row["best_epoch"], "val_segment_accuracy"]
        # The table's val score is the best weights scored again at the end: the same number.
        assert best["metrics"]["val_segment_accuracy"] == pytest.approx(at_best, abs=1e-9)
        assert row["val_segment_accuracy"] == pytest.approx(at_best, abs=1e-6)


@pytest.mark.ray  # a `genre prepare` process that starts its own Ray
def test_a_killed_prepare_leaves_no_dataset_and_a_rerun_on_its_own_loopback_ray_completes(
    tiny_audio, tmp_path
):
    out = tmp_path / "data"
    command = [*GENRE, "prepare", str(tiny_audio), str(out), "--tracks-per-shard", "1"]
    first = subprocess.Popen(
        command, env=ray_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".data.partial-*/*/*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop_and_wait(first, signal.SIGKILL)
    partial = list(tmp_path.glob(".data.partial-*"))
    assert partial and not is_dataset(out)  # killed part-way: shards written, no dataset

    # The killed run's Ray left its address file, as a head stopped by a signal does: Ray's default
    # would join that dead head. genre starts a Ray of its own, listening on loopback only.
    ray_tmp = Path(short_temp_dir())
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    env = ray_environment(RAY_TMPDIR=str(ray_tmp))
    env.pop(RAY_CLUSTER_MODE_VARIABLE, None)  # `genre` must choose loopback itself
    env.pop("RAY_ADDRESS", None)
    rerun = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with ListeningSampler(psutil.Process(rerun.pid), every_s=0.2) as listening:
            printed, errors = rerun.communicate(timeout=300)
    finally:
        rerun.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert rerun.returncode == 0, errors[-3000:]
    assert is_dataset(out) and "left by an interrupted run" in printed
    assert not list(tmp_path.glob(".data.partial-*"))  # the killed run's folder is gone
    assert len(listening.seen) >= 4, listening.seen  # its GCS, raylet, agents and the driver's own worker
    assert {ip for ip, _ in listening.seen} <= LOOPBACK, listening.seen


@pytest.mark.ray  # a `genre prepare` process that starts its own Ray
def test_ctrl_c_while_ray_starts_ends_prepare_at_once_with_nothing_left(tiny_audio, tmp_path):
    # A dead head's address file, as a stopped `ray start` leaves it: genre starts its own Ray anyway
    # (joining the dead head would hang in Ray's connect, deaf to Ctrl-C).
    ray_tmp = Path(short_temp_dir())
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    out = tmp_path / "work"
    out.mkdir()
    command = [*GENRE, "prepare", str(tiny_audio), str(out / "data")]
    env = ray_environment(RAY_TMPDIR=str(ray_tmp))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    driver = psutil.Process(process.pid)
    deadline = time.monotonic() + 120
    while not driver.children() and time.monotonic() < deadline:
        time.sleep(0.05)  # the first child is Ray's GCS: Ray is starting
    family = driver.children(recursive=True)
    assert family, "Ray never started"
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    assert time.monotonic() - interrupted < 15
    assert process.returncode == 130, process.stderr.read()
    assert process.stderr.read().decode().strip().splitlines()[-1] == "genre prepare: interrupted"
    _, alive = psutil.wait_procs(family, timeout=15)
    assert not alive, [p.name() for p in alive]
    assert list(out.iterdir()) == []  # no dataset, no partial folder
    shutil.rmtree(ray_tmp, ignore_errors=True)


hide = pytest.mark.skipif(not can_hide_a_folder_from_a_node(), reason="needs unshare and mount (root)")


def in_own_mount(mount_options: str, folder: Path, command: list[str]) -> subprocess.CompletedProcess:
    """Run `command` with a tmpfs mounted on `folder` (read-only, or tiny) in a namespace of its own.

    Root ignores file permissions: a read-only or full filesystem is the way to refuse it a write.
    """
    folder.mkdir(parents=True, exist_ok=True)
    script = 'mount -t tmpfs -o "$1" genre-test "$2" && shift 2 && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", mount_options,
         str(folder), *command],
        env=ray_environment(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@hide
def test_a_read_only_out_stops_the_sweep_before_any_trial(tiny_dataset, tmp_path):
    locked = tmp_path / "locked"
    run = in_own_mount(
        "ro", locked, [*GENRE, "sweep", str(tiny_dataset), str(locked / "run"), "--models", "cnn3"]
    )
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1] == (
        f"genre sweep: error: cannot write to OUT '{locked / 'run'}': Read-only file system"
    )
    assert "sweep:" not in run.stdout  # nothing was planned or started


@pytest.mark.ray  # a `genre prepare` process that starts its own Ray
@hide
def test_prepare_into_a_full_disk_says_so_and_keeps_nothing_partial(tiny_audio, tmp_path):
    full = tmp_path / "full"
    run = in_own_mount("size=96k", full, [*GENRE, "prepare", str(tiny_audio), str(full / "data")])
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1] == (
        f"genre prepare: error: cannot write the dataset next to OUT '{full / 'data'}': No space left on "
        "device; nothing was kept: free space or choose another OUT"
    )
