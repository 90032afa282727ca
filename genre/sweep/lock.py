"""One command at a time in a folder: a lock file naming its holder (host, pid, start), held while a
sweep (or a demo) runs in OUT, and in its run storage when `--storage` puts that elsewhere.

A second command is refused in one line naming the holder, and touches nothing. A lock left by a
process that is gone (killed, the machine rebooted) is taken over, with a line saying so; a
process of another machine cannot be checked from here, so its lock is refused with how to clear it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from data_pipeline.errors import UserInputError
from data_pipeline.processes import pid_alive
from data_pipeline.storage import Storage, first_line

LOCK_NAME = ".genre.lock"
# How long a lock that keeps changing (being written, released, taken over) is waited for.
CHANGING_WAIT_S = 5.0
# A takeover lasts an instant: a marker of one older than this was left by a command killed in it.
STALE_MARKER_S = 30.0
# An object store publishes the last of two uploads of one name (see _ObjectLock): the wait between
# writing the lock and reading it back, far longer than one upload takes.
OBJECT_SETTLE_S = 2.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: what the lock file says."""

    host: str
    pid: int
    started: str  # when, in UTC, for people
    command: str
    token: str  # this very acquisition: a lock is removed only by the one who wrote it
    # Linux: the kernel's boot and the process's start (clock ticks after boot), so that a pid used
    # again by another process (a restarted container's genre is often pid 1 again) is not the holder.
    boot: str | None = None
    process_start: str | None = None

    def describe(self) -> str:
        host = "" if self.host == socket.gethostname() else f" on host {self.host}"
        return f"{self.command}{host} (pid {self.pid}, started {self.started})"

    def is_gone(self) -> bool:
        """True when the holder ran on this machine and its process has ended; a holder of another
        machine cannot be checked, and counts as running."""
        if self.host != socket.gethostname():
            return False
        if self.boot and self.boot != _boot_id():
            return True
        if not _pid_alive(self.pid):
            return True
        return self.process_start is not None and _process_start(self.pid) != self.process_start


def me(command: str) -> Holder:
    """This process, as a lock file names it."""
    return Holder(
        host=socket.gethostname(),
        pid=os.getpid(),
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        command=command,
        token=uuid.uuid4().hex,
        boot=_boot_id(),
        process_start=_process_start(os.getpid()),
    )


@contextlib.contextmanager
def holding_lock(place: Storage, where: str, command: str, progress: Progress = print) -> Iterator[None]:
    """Hold the lock of a folder (a path, or an object store's prefix) for the block, released however
    it ends. `where` names the folder in messages ("OUT '/runs/a'"). A local folder made here for the
    lock is removed again if it is left empty: a refused start leaves no folder behind."""
    holder = me(command)
    if not place.is_local:
        lock = _ObjectLock(place, where, holder)
        lock.acquire(progress)
        try:
            yield
        finally:
            lock.release(progress)
        return
    folder = Path(place.path)
    made = _make_folders(folder, where)
    try:
        file_lock = _FileLock(folder / LOCK_NAME, where, holder)
        file_lock.acquire(progress)
        try:
            yield
        finally:
            file_lock.release(progress)
    finally:
        for path in made:  # deepest first; only empty ones go (rmdir), never anything in them
            with contextlib.suppress(OSError):
                path.rmdir()


def read_holder(data: bytes) -> Holder | None:
    """The holder a lock file names; None if it cannot be read as one."""
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        return None


class _FileLock:
    """A lock file on a file tree (a local disk or NFS): created only if absent (O_EXCL)."""

    def __init__(self, path: Path, where: str, holder: Holder) -> None:
        self.path, self.where, self.holder = path, where, holder
        self.content = json.dumps(asdict(holder)).encode() + b"\n"
        # Held for the instant of taking over a stale lock, so that two commands never both do.
        self.marker = path.with_name(f"{path.name}.takeover")

    def acquire(self, progress: Progress) -> None:
        # Tries again while the lock changes under us: released, being written, or taken over.
        give_up = time.monotonic() + CHANGING_WAIT_S
        while time.monotonic() < give_up:
            if self._create():
                return
            found = self._read()
            holder = read_holder(found) if found else None
            if holder is None:  # gone meanwhile, or created and not yet written by its holder
                time.sleep(0.02)
                continue
            if not holder.is_gone():
                raise UserInputError(_busy(self.where, holder, self.path))
            if self._take_over(found):
                progress(_taken_over(self.where, holder))
        raise UserInputError(_busy(self.where, None, self.path))

    def release(self, progress: Progress) -> None:
        if self._read() != self.content:
            return  # not ours any more (deleted by hand, or taken over): left as it is
        try:
            self.path.unlink()
        except OSError as error:  # a disk turned read-only: the next command takes it over
            progress(f"warning: cannot remove the lock {self.path} ({error.strerror})")

    def _create(self) -> bool:
        """Write the lock if there is none; False if there is one."""
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as error:
            raise UserInputError(f"cannot write to {self.where}: {error.strerror}") from None
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(self.content)
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:  # a full disk: no empty lock left to refuse the next command
            self.path.unlink(missing_ok=True)
            raise UserInputError(f"cannot write to {self.where}: {error.strerror}") from None
        return True

    def _read(self) -> bytes | None:
        """The lock file's bytes; None once it is gone (released meanwhile)."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise UserInputError(f"cannot read the lock {self.path}: {error.strerror}") from None

    def _take_over(self, stale: bytes) -> bool:
        """Delete the lock of a holder that is gone, if it is still that lock; False if another
        command is taking it over, or has.

        The lock is checked and deleted only while holding the marker (O_EXCL too), so that a lock
        just written by the command that took it over is never deleted by another that judged the
        old one. A marker left by a command killed in that instant is old: it is removed.
        """
        try:
            os.close(os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - self.marker.stat().st_mtime > STALE_MARKER_S:
                    self.marker.unlink()
            return False
        except OSError as error:
            raise UserInputError(f"cannot write to {self.where}: {error.strerror}") from None
        try:
            if self._read() != stale:
                return False
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False
        finally:
            self.marker.unlink(missing_ok=True)


class _ObjectLock:
    """A lock object in an object store (s3://, gs://).

    pyarrow (26) writes an object unconditionally: it sends no `If-None-Match` (passed as metadata,
    it is dropped; a second upload over the first succeeds, checked against the tests' S3 server),
    so "create only if absent" is: look, upload a lock holding a token of this start, wait
    OBJECT_SETTLE_S, read it back. Of two starts that both found no lock, the last upload stays
    (S3 and GCS are read-after-write consistent) and only its writer reads its own token back: the
    other refuses. The window left: a start that looked before the other's upload and uploaded only
    after the other's read-back, a stall of more than OBJECT_SETTLE_S within one request.
    A local lock of the storage's URI would not do: two machines sharing the bucket never see it.
    """

    def __init__(self, folder: Storage, where: str, holder: Holder) -> None:
        self.folder, self.place = folder, folder.child(LOCK_NAME)
        self.where, self.holder = where, holder
        self.content = json.dumps(asdict(holder)).encode() + b"\n"

    def acquire(self, progress: Progress) -> None:
        try:
            found = self.place.read_bytes() if self.place.exists() else None
            stale = None
            if found is not None:
                holder = read_holder(found)
                if holder is None or not holder.is_gone():
                    raise UserInputError(_busy(self.where, holder, self.place))
                stale = holder
            self.folder.make_dirs()  # a missing bucket is named as such, not as a failed upload
            self.place.write_bytes(self.content)
            time.sleep(OBJECT_SETTLE_S)
            now = self.place.read_bytes()
        except OSError as error:
            raise UserInputError(f"cannot write to {self.where}: {first_line(error)}") from None
        if now != self.content:
            raise UserInputError(_busy(self.where, read_holder(now), self.place))
        if stale is not None:
            progress(_taken_over(self.where, stale))

    def release(self, progress: Progress) -> None:
        try:
            if self.place.exists() and self.place.read_bytes() == self.content:
                self.place.delete_file()
        except OSError as error:
            progress(f"warning: cannot remove the lock {self.place} ({first_line(error)})")


def _busy(where: str, holder: Holder | None, lock: object) -> str:
    if holder is None:
        return (
            f"{where} is locked by another genre command ({lock}); if none runs there, delete that "
            "lock and run the command again"
        )
    if holder.host == socket.gethostname():
        return f"{where} is in use by {holder.describe()}: wait for it to end, or stop it first"
    return (
        f"{where} is in use by {holder.describe()}; if that command is no longer running, delete "
        f"{lock} and run the command again"
    )


def _taken_over(where: str, holder: Holder) -> str:
    return f"note: {where} was locked by {holder.describe()}, which is no longer running: lock taken over"


def _make_folders(folder: Path, where: str) -> list[Path]:
    """Make `folder` and its missing parents; the ones made, deepest first."""
    missing = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"{where} exists and is not a folder")
    made: list[Path] = []
    try:
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):  # made by another command meanwhile: not ours
                path.mkdir()
                made.insert(0, path)
    except OSError as error:
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise UserInputError(f"cannot write to {where}: {error.strerror}") from None
    return made


def _pid_alive(pid: int) -> bool:
    # A process killed but not yet reaped by its parent (a zombie) is gone for good.
    return pid_alive(pid) and _process_state(pid) != "Z"


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command's name (which may hold spaces), on Linux; None elsewhere."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _process_state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _process_start(pid: int) -> str | None:
    fields = _stat_fields(pid)
    # Field 22 of stat(5), the 20th after the name: the start, in clock ticks after boot.
    return fields[19] if fields and len(fields) > 19 else None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
