"""One command at a time in a folder (genre.sweep.lock): a second sweep, `--resume` or demo into a busy
OUT or run storage is refused in one line and touches nothing; a killed holder's lock is taken over.
A refused start leaves nothing behind (no sweep.yaml, no folder); `prepare --overwrite` on an OUT that
is a link replaces the dataset where the link leads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from data_pipeline.dataset_folder import StagingWriter
from data_pipeline.errors import UserInputError
from data_pipeline.storage import open_storage
from genre.cli import EXIT_USER_ERROR, main
from genre.sweep import lock as sweep_lock
from genre.sweep.lock import LOCK_NAME, Holder, holding_lock, me
from genre.sweep.record import SWEEP_FILE
from tests.ray_nodes import free_port, ray_environment
from tests.s3_server import CREDENTIALS, bucket, s3_endpoint_fixture  # noqa: F401 (s3_endpoint)
from tests.test_faults import GENRE, hide, in_own_mount

SWEEP = ["--models", "cnn3", "--epochs", "1", "--pretrained", "no", "--seed", "5"]
# Another process holding a folder's lock, as a running sweep does, until its stdin closes.
HOLD = textwrap.dedent(
    """
    import sys
    from data_pipeline.storage import open_storage
    from genre.sweep.lock import holding_lock
    with holding_lock(open_storage(sys.argv[1]), "OUT", sys.argv[2]):
        print("held", flush=True)
        sys.stdin.read()
    """
)


@contextmanager
def held_elsewhere(folder: Path, command: str = "genre sweep") -> Iterator[subprocess.Popen]:
    """The lock of `folder` held by another process for the block."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=ray_environment(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        if holder.poll() is None:
            holder.stdin.close()
            holder.wait(timeout=30)


def killed_holder(folder: Path) -> int:
    """The lock of `folder` left by a holder killed with SIGKILL; its pid."""
    with held_elsewhere(folder) as holder:
        holder.kill()
        holder.wait(timeout=30)
    return holder.pid


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) below `folder`, hidden ones included."""
    return {
        str(path.relative_to(folder)): (path.read_bytes() if path.is_file() else None)
        for path in sorted(folder.rglob("*"))
    }


def write_lock(folder: Path, holder: Holder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps(asdict(holder)))


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


# The lock itself, without Ray.


def test_a_second_holder_is_refused_naming_the_first_and_touching_nothing(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "sweep.yaml").write_text("models: [cnn3]\n")
    with held_elsewhere(out) as holder:
        before = snapshot(out)
        with (
            pytest.raises(UserInputError) as refused,
            holding_lock(open_storage(out), "OUT 'run'", "genre sweep"),
        ):
            pytest.fail("a second holder got the lock")
        assert snapshot(out) == before
    message = str(refused.value)
    assert message.startswith(f"OUT 'run' is in use by genre sweep (pid {holder.pid}, started ")
    assert message.endswith("wait for it to end, or stop it first")
    assert not (out / LOCK_NAME).exists()  # released by its holder


def test_the_lock_of_a_killed_holder_is_taken_over_with_a_line_and_released_after(tmp_path):
    out = tmp_path / "run"
    pid = killed_holder(out)
    assert (out / LOCK_NAME).is_file()  # nothing ran after SIGKILL
    said: list[str] = []
    with holding_lock(open_storage(out), "OUT 'run'", "genre sweep --resume", said.append):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(said) == 1
    assert said[0].startswith(f"note: OUT 'run' was locked by genre sweep (pid {pid}, started ")
    assert said[0].endswith("which is no longer running: lock taken over")
    assert list(out.iterdir()) == []  # the folder existed before: kept, and the lock is gone


def test_a_pid_that_another_process_uses_again_does_not_hold_the_lock(tmp_path):
    """A restarted container's genre often gets the pid of the one that was killed: the lock names
    the process's start too."""
    if me("x").process_start is None:
        pytest.skip("needs /proc")
    write_lock(tmp_path, replace(me("genre sweep"), process_start="1"))  # this pid, started long ago
    said: list[str] = []
    with holding_lock(open_storage(tmp_path), "OUT", "genre sweep", said.append):
        pass
    assert len(said) == 1 and "no longer running" in said[0]


def test_a_lock_of_another_host_is_refused_naming_it_and_how_to_clear_it(tmp_path):
    write_lock(tmp_path, replace(me("genre sweep"), host="node-7", pid=4242))
    before = snapshot(tmp_path)
    with (
        pytest.raises(UserInputError) as refused,
        holding_lock(open_storage(tmp_path), "OUT 'run'", "genre sweep"),
    ):
        pass
    message = str(refused.value)
    assert message.startswith("OUT 'run' is in use by genre sweep on host node-7 (pid 4242, started ")
    assert message.endswith(
        f"if that command is no longer running, delete {tmp_path / LOCK_NAME} and run the command again"
    )
    assert snapshot(tmp_path) == before


def test_a_lock_is_released_when_the_block_fails_and_a_folder_made_for_it_is_removed(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError), holding_lock(open_storage(out), "OUT", "genre sweep"):
        assert (out / LOCK_NAME).is_file()
        raise RuntimeError("refused")
    assert list(tmp_path.iterdir()) == []  # both folders made for the lock are gone
    with holding_lock(open_storage(out), "OUT", "genre sweep"):
        (out / SWEEP_FILE).write_text("started")
    assert [p.name for p in out.iterdir()] == [SWEEP_FILE]  # a folder with a sweep in it stays


def racers(count: int, take) -> list[str]:
    """`take()` in `count` threads at once; each winner holds until every loser has been refused."""
    results: list[str] = []
    start, losers_done = threading.Barrier(count), threading.Event()

    def race() -> None:
        start.wait()
        try:
            with take():
                results.append("won")
                losers_done.wait(60)
        except UserInputError as error:
            results.append(str(error))
            if sum(result != "won" for result in results) >= count - 1:
                losers_done.set()

    threads = [threading.Thread(target=race) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return results


def test_of_many_commands_taking_one_lock_or_one_stale_lock_at_once_one_wins(tmp_path):
    fresh = racers(8, lambda: holding_lock(open_storage(tmp_path / "a"), "OUT", "genre sweep"))
    assert fresh.count("won") == 1, fresh
    write_lock(tmp_path / "b", replace(me("genre sweep"), pid=dead_pid(), process_start=None))
    stale = racers(8, lambda: holding_lock(open_storage(tmp_path / "b"), "OUT", "genre sweep"))
    assert stale.count("won") == 1, stale
    assert all("is in use by genre sweep" in result for result in stale if result != "won"), stale


def test_an_object_store_lock_is_refused_while_held_and_of_two_at_once_one_wins(s3_endpoint, monkeypatch):
    monkeypatch.setattr(sweep_lock, "OBJECT_SETTLE_S", 0.5)
    storage = open_storage(f"s3://{CREDENTIALS}genre-locks/runs?{bucket(s3_endpoint, 'genre-locks')}")
    lock = storage.child(LOCK_NAME)
    with holding_lock(storage, "the run storage", "genre sweep"):
        assert json.loads(lock.read_bytes())["pid"] == os.getpid()
        busy = r"^the run storage is in use by genre sweep \(pid "
        with (
            pytest.raises(UserInputError, match=busy),
            holding_lock(storage, "the run storage", "genre sweep"),
        ):
            pass
        assert lock.exists()  # the refused one left the holder's lock alone
    assert not lock.exists()
    results = racers(2, lambda: holding_lock(storage, "the run storage", "genre sweep"))
    assert results.count("won") == 1, results
    assert not lock.exists()
    lock.write_bytes(json.dumps(asdict(replace(me("genre sweep"), pid=dead_pid()))).encode())
    said: list[str] = []
    with holding_lock(storage, "the run storage", "genre sweep", said.append):
        pass
    assert len(said) == 1 and "no longer running: lock taken over" in said[0]


# `genre demo` and `genre sweep`.


def test_a_demo_into_a_folder_where_a_demo_runs_is_refused_naming_it(capsys, tmp_path):
    out = tmp_path / "demo"
    with held_elsewhere(out, "genre demo") as holder:
        (out / "audio").mkdir()
        before = snapshot(out)
        assert main(["demo", str(out)]) == EXIT_USER_ERROR
        assert snapshot(out) == before
    assert one_line(capsys).startswith(
        f"genre demo: error: OUT '{out}' is in use by genre demo (pid {holder.pid}, started "
    )


def test_a_second_sweep_or_resume_into_a_busy_out_is_refused_in_one_line_touching_nothing(
    capsys, tiny_dataset, tmp_path
):
    out = tmp_path / "run"
    with held_elsewhere(out) as holder:
        (out / SWEEP_FILE).write_text(f"data: {tiny_dataset}\nmodels: [cnn3]\nepochs: 1\n")
        before = snapshot(out)
        started = json.loads((out / LOCK_NAME).read_text())["started"]
        for extra in ([], ["--seed", "6"], ["--resume"]):
            code = main(["sweep", str(tiny_dataset), str(out), *SWEEP[:2], *extra])
            printed = capsys.readouterr()
            assert code == EXIT_USER_ERROR, printed.err
            assert printed.out == ""  # nothing planned, nothing started
            assert printed.err.strip().splitlines() == [
                f"genre sweep: error: OUT '{out}' is in use by genre sweep (pid {holder.pid}, started "
                f"{started}): wait for it to end, or stop it first"
            ]
            assert snapshot(out) == before


def test_a_stale_lock_in_out_is_taken_over_by_the_next_sweep(capsys, tiny_dataset, tmp_path):
    out = tmp_path / "run"
    pid = killed_holder(out)
    # A resume of nothing: refused after the lock was taken, so the test stops there.
    assert main(["sweep", str(tiny_dataset), str(out), "--resume"]) == EXIT_USER_ERROR
    printed = capsys.readouterr()
    assert f"note: OUT '{out}' was locked by genre sweep (pid {pid}, started " in printed.out
    assert "holds no sweep to resume" in printed.err
    assert list(out.iterdir()) == []  # the lock is released


def test_a_run_storage_in_use_by_another_sweep_is_refused_and_out_is_not_made(
    capsys, s3_endpoint, tiny_dataset, tmp_path
):
    storage = f"s3://{CREDENTIALS}genre-busy/runs?{bucket(s3_endpoint, 'genre-busy')}"
    out = tmp_path / "new" / "run"
    with holding_lock(open_storage(storage), "another sweep's storage", "genre sweep"):
        assert main(["sweep", str(tiny_dataset), str(out), *SWEEP, "--storage", storage]) == EXIT_USER_ERROR
    printed = capsys.readouterr().err.splitlines()
    # Of genre's, one line (the S3 server in this process logs each request to stderr too).
    [error] = [line for line in printed if line.startswith("genre ")]
    assert error.startswith("genre sweep: error: the run storage s3://genre-key:***@genre-busy/runs?")
    assert f"is in use by genre sweep (pid {os.getpid()}, started " in error
    assert "genre-secret" not in error
    assert list(tmp_path.iterdir()) == []


# A refused start leaves nothing.


def test_a_sweep_refused_once_ray_is_reached_leaves_no_folder_and_no_record(capsys, tiny_dataset, tmp_path):
    out = tmp_path / "new" / "run"
    # Two workers on one GPU: refused as the trials are fitted to the cluster, once Ray is reached.
    argv = ["sweep", str(tiny_dataset), str(out), *SWEEP, "--num-workers", "2", "--gpus-per-trial", "1"]
    assert main(argv) == EXIT_USER_ERROR
    assert "NCCL refuses" in one_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_at_an_address_that_hangs_writes_no_record(tiny_dataset, tmp_path):
    """Something that is not Ray answers TCP at the address: whether the sweep ends (refused) or
    hangs, OUT gets no sweep.yaml, and a refused one leaves no OUT."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out = tmp_path / "run"
    sweep = subprocess.Popen(
        [*GENRE, "sweep", str(tiny_dataset), str(out), *SWEEP, "--address", f"127.0.0.1:{port}"],
        env=ray_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        # The lock (genre's) or the record (before the fix) appears once the sweep's checks passed.
        while time.monotonic() < deadline and sweep.poll() is None and not (out / LOCK_NAME).exists():
            if (out / SWEEP_FILE).exists():
                break
            time.sleep(0.1)
        try:
            sweep.wait(timeout=5)
        except subprocess.TimeoutExpired:
            assert not (out / SWEEP_FILE).exists()
        else:
            assert sweep.returncode == EXIT_USER_ERROR, sweep.stderr.read()[-2000:]
            assert not out.exists()
    finally:
        sweep.kill()
        sweep.wait(timeout=30)
        server.kill()
        server.wait(timeout=30)


@hide
def test_a_sweep_into_a_full_disk_leaves_no_empty_record_and_no_folder(tiny_dataset, tmp_path):
    disk = tmp_path / "disk"
    sweep = [*GENRE, "sweep", str(tiny_dataset), str(disk / "run"), *SWEEP]
    script = 'cat /dev/zero > "$0/fill" 2>/dev/null; "$@"; code=$?; find "$0" -mindepth 1; exit $code'
    run = in_own_mount("size=256k", disk, ["sh", "-c", script, str(disk), *sweep])
    assert run.returncode == EXIT_USER_ERROR, run.stderr[-2000:]
    assert run.stderr.strip().splitlines() == [
        f"genre sweep: error: cannot write to OUT '{disk / 'run'}': No space left on device"
    ]
    assert run.stdout.split() == [str(disk / "fill")]  # no run/, no 0-byte sweep.yaml


# `prepare --overwrite` on an OUT that is a link.


def test_a_dataset_written_to_a_link_goes_where_it_leads_and_the_link_stays(tmp_path):
    for target in (tmp_path / "empty", tmp_path / "dangling"):
        if target.name == "empty":
            target.mkdir()
        link = tmp_path / f"to-{target.name}"
        link.symlink_to(target)
        writer = StagingWriter(link, overwrite=False, progress=lambda _: None)
        writer.publish({"format_version": 0})
        assert link.is_symlink() and link.readlink() == target
        assert json.loads((target / "manifest.json").read_text()) == {"format_version": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "empty", "to-dangling", "to-empty"]


def test_overwrite_on_an_out_that_is_a_link_replaces_the_dataset_it_leads_to(prepared, collection, tmp_path):
    target, link = tmp_path / "datasets" / "v1", tmp_path / "current"
    target.parent.mkdir()
    shutil.copytree(prepared.out, target)
    link.symlink_to(target)
    assert main(["prepare", str(collection), str(link), "--overwrite", "--seed", "9"]) == 0
    assert link.is_symlink() and link.readlink() == target
    assert json.loads((target / "manifest.json").read_text())["split"]["seed"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "datasets"]  # no `.replaced-` link
    assert [p.name for p in target.parent.iterdir()] == ["v1"]  # no staging folder left
