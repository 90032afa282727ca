"""Folders that fail under a sweep: a disk that fills, OUT turning read-only, storage that does not
answer. Each ends in one line; a full disk, once freed, resumes from the last complete checkpoint."""

from __future__ import annotations

import errno
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from genre.cli import EXIT_USER_ERROR, main
from genre.run_storage.whole_files import PARTIAL_PREFIX, whole_file_filesystem
from genre.sweep.storage_faults import failure_line, refused_write
from tests.ray_nodes import free_port, ray_environment
from tests.test_faults import GENRE, hide

SWEEP = ["--models", "cnn3", "--pretrained", "no", "--seed", "5"]


def test_a_write_the_disk_refuses_leaves_the_last_complete_file_and_no_partial_one(tmp_path):
    """As Ray uploads a checkpoint (copy_files) and writes its run state (an output stream), on a
    disk that refuses writes past 100 kB: RLIMIT_FSIZE, which needs no root."""
    script = textwrap.dedent(
        f"""
        import os, resource, signal
        from pathlib import Path
        import pyarrow.fs as pafs
        from genre.run_storage.whole_files import whole_file_filesystem

        folder = Path({str(tmp_path)!r})
        (folder / "upload").mkdir()
        (folder / "upload" / "state.pt").write_bytes(os.urandom(300_000))
        (folder / "storage").mkdir()
        fs, upload, storage = whole_file_filesystem(), folder / "upload", folder / "storage"
        with fs.open_output_stream(str(folder / "storage" / "state.pt")) as stream:
            stream.write(b"complete")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        for attempt in ("copy", "stream"):
            try:
                if attempt == "copy":
                    pafs.copy_files(str(upload), str(storage), destination_filesystem=fs)
                else:
                    with fs.open_output_stream(str(folder / "storage" / "state.pt")) as stream:
                        stream.write(b"x" * 200_000)
            except OSError as error:
                print(attempt, error.errno)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["copy", "27", "stream", "27"]  # both refused (EFBIG)...
    assert (tmp_path / "storage" / "state.pt").read_bytes() == b"complete"  # ...and the file is whole
    assert os.listdir(tmp_path / "storage") == ["state.pt"]
    fs = whole_file_filesystem()
    pafs.copy_files(str(tmp_path / "upload"), str(tmp_path / "storage"), destination_filesystem=fs)
    assert (tmp_path / "storage" / "state.pt").read_bytes() == (tmp_path / "upload" / "state.pt").read_bytes()


def test_a_refused_write_is_told_about_the_folder_it_was_refused_in():
    out = "/runs/a"
    worker_failure = RuntimeError("worker group failed")
    worker_failure.__cause__ = OSError(errno.ENOSPC, "No space left on device")  # Ray's upload: no path
    assert refused_write(worker_failure, out).errno == errno.ENOSPC
    assert failure_line("OUT '/runs/a'", refused_write(worker_failure, out), out) == (
        "OUT '/runs/a' is full (No space left on device): free space there, then run the same command "
        "with --resume"
    )
    elsewhere = OSError(errno.ENOSPC, "No space left on device", "/tmp/ray/session_1/artifacts/x.json")
    assert failure_line("OUT '/runs/a'", elsewhere, out).startswith("'/tmp/ray/session_1/artifacts' is full")
    # A file the trial may not read is the trial's own error, not the sweep's storage.
    assert refused_write(PermissionError(errno.EACCES, "Permission denied", "/weights/b0.pth"), out) is None
    assert refused_write(PermissionError(errno.EACCES, "Permission denied", "/runs/a/plots"), out) is not None
    assert refused_write(ValueError("not a storage error"), out) is None


def test_a_run_storage_that_does_not_answer_is_one_line_before_ray_starts(tiny_dataset, tmp_path, capsys):
    closed = f"127.0.0.1:{free_port()}"
    storage = f"s3://bucket/runs?endpoint_override={closed}&scheme=http&region=us-east-1"
    code = main(["sweep", str(tiny_dataset), str(tmp_path / "run"), "--storage", storage, *SWEEP])
    assert code == EXIT_USER_ERROR
    printed = capsys.readouterr()
    assert printed.out == ""  # nothing planned, nothing started
    assert len(printed.err.strip().splitlines()) == 1
    assert printed.err.startswith(f"genre sweep: error: cannot reach the run storage {storage}: ")
    assert "Could not connect" in printed.err


def in_own_tmpfs(folder: Path, script: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`script` (sh) with a tmpfs of its own on $OUT_MOUNT (mounted by the script), in a mount namespace
    of its own, so that it can fill it, grow it and make it read-only; root only."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=ray_environment(OUT_MOUNT=str(folder)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@hide
def test_a_full_disk_stops_the_sweep_in_one_line_and_resume_continues_once_there_is_space(
    tiny_dataset, tmp_path
):
    """4 MB: room for cnn3's first checkpoint (2.0 MB) and not its second (2.6 MB, with the best
    epoch's weights), which fills the disk as Ray Train uploads it."""
    mount, logs = tmp_path / "disk", tmp_path / "logs"
    logs.mkdir()
    sweep = shlex.join([*GENRE, "sweep", str(tiny_dataset), str(mount / "run"), *SWEEP, "--epochs", "3"])
    resume = shlex.join([*GENRE, "sweep", str(tiny_dataset), str(mount / "run"), "--resume"])
    script = f"""
        mount -t tmpfs -o size=4m genre-full "$OUT_MOUNT" || exit 99
        {sweep} > {logs}/full.out 2> {logs}/full.err; echo $? > {logs}/full.rc
        find "$OUT_MOUNT" -type f \\( -name '{PARTIAL_PREFIX}*' -o -name '.*.*' -o -size 0 \\) > {logs}/left
        mount -o remount,size=64m "$OUT_MOUNT"
        {resume} > {logs}/resumed.out 2> {logs}/resumed.err; echo $? > {logs}/resumed.rc
        cp -r "$OUT_MOUNT/run" {logs}/run
    """
    run = in_own_tmpfs(mount, script, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    full_err = (logs / "full.err").read_text()
    assert (logs / "full.rc").read_text().strip() == str(EXIT_USER_ERROR), full_err[-3000:]
    assert full_err.strip().splitlines() == [
        f"genre sweep: error: OUT '{mount / 'run'}' is full (No space left on device): free space there, "
        "then run the same command with --resume"
    ]
    assert "Traceback" not in (logs / "full.out").read_text()
    # Ray's markers are empty by design; nothing else is, and nothing was left half-written.
    left = [line for line in (logs / "left").read_text().splitlines() if not line.endswith("_marker")]
    assert left == []

    resumed_err = (logs / "resumed.err").read_text()
    assert (logs / "resumed.rc").read_text().strip() == "0", resumed_err[-3000:]
    resumed_out = (logs / "resumed.out").read_text()
    # From epoch 0's checkpoint, the last complete one: epoch 0 is not trained again.
    assert "epoch 1/3" not in resumed_out and "epoch 2/3" in resumed_out, resumed_out
    table = pd.read_parquet(logs / "run" / "results.parquet")
    assert list(table["status"]) == ["completed"] and list(table["epochs"]) == [3]
    history = pd.read_parquet(logs / "run" / "history.parquet")
    assert sorted(history["epoch"]) == [0, 1, 2]


@hide
def test_out_turning_read_only_mid_sweep_is_one_line(tiny_dataset, tmp_path):
    """The worker pauses after epoch 0's checkpoint; OUT is remounted read-only, the worker killed:
    Ray Train restarts it, and its first write (and Tune's next save) is refused."""
    mount, logs = tmp_path / "disk", tmp_path / "logs"
    logs.mkdir()
    paused = logs / "worker.pid"
    sweep = shlex.join(
        [*GENRE, "sweep", str(tiny_dataset), str(mount / "run"), *SWEEP, "--epochs", "2",
         "--inject-fault", f"cnn3=pause@1:0:{paused}"]
    )  # fmt: skip
    script = f"""
        mount -t tmpfs -o size=64m genre-ro "$OUT_MOUNT" || exit 99
        {sweep} > {logs}/ro.out 2> {logs}/ro.err &
        sweep=$!
        tries=0
        while [ ! -f {paused} ] && [ $tries -lt 3000 ]; do sleep 0.1; tries=$((tries + 1)); done
        until mount -o remount,ro "$OUT_MOUNT"; do sleep 0.1; done  # busy while a file is being written
        kill -9 "$(cat {paused})"
        wait $sweep; echo $? > {logs}/ro.rc
    """
    run = in_own_tmpfs(mount, script)
    assert run.returncode == 0, run.stderr[-2000:]
    err = (logs / "ro.err").read_text()
    assert (logs / "ro.rc").read_text().strip() == str(EXIT_USER_ERROR), err[-3000:]
    assert err.strip().splitlines() == [
        f"genre sweep: error: cannot write to OUT '{mount / 'run'}' (Read-only file system): make it "
        "writable, then run the same command with --resume"
    ]
    assert "Traceback" not in (logs / "ro.out").read_text()
