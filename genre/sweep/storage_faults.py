"""A sweep whose folders fail under it: a disk that fills or turns read-only, storage that does not answer.

Each ends the command in one line naming the folder and what to do, where Ray printed a traceback per
failed sync, per failed trial and for its own end (112 to 230 lines). While Tune runs, a failed write
is seen in Ray's own log records (a trial's error, a failed sync of Tune's state) and stops the sweep
at the next step of Tune's loop, as Ctrl-C does, so nothing more is written to a folder that refuses
writes and every trial is left to `--resume` from its last complete checkpoint
(genre.run_storage.whole_files).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ray import tune

from data_pipeline.errors import UserInputError
from data_pipeline.storage import Storage, first_line, is_uri, open_storage

if TYPE_CHECKING:
    from genre.sweep.options import SweepConfig

# What each refusal means for the user.
FULL = {errno.ENOSPC, errno.EDQUOT}
READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")
# The failures seen in Ray's log records since `watch_storage` began (one sweep per process).
_seen: list[OSError] = []


class StorageFailed(Exception):
    """Raised in Tune's loop to stop the sweep: a folder of the sweep refused a write."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def refused_write(error: BaseException | None, folder: str | None = None) -> OSError | None:
    """The full-disk or read-only OSError anywhere in an error's chain, through Ray's wrappers (a
    task's cause, a worker group's failures, a controller's failure), if there is one. A permission
    refused on a file outside `folder` (the sweep's, None for an object store) is not one: that is
    the trial's own error (a weights file it may not read)."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, StorageFailed):
            return current.error
        # A full or read-only disk wherever it is; a permission only where the sweep writes.
        if isinstance(current, OSError) and (
            current.errno in FULL | {errno.EROFS} or (current.errno in READ_ONLY and _inside(current, folder))
        ):
            return current
        failures = getattr(current, "worker_failures", None) or {}
        pending.extend(
            inner
            for inner in (
                getattr(current, "cause", None),
                getattr(current, "controller_failure", None),
                current.__cause__,
                current.__context__,
                *failures.values(),
            )
            if isinstance(inner, BaseException)
        )
    return None


def _inside(error: OSError, folder: str | None) -> bool:
    """Whether the error is about `folder`: its file is there, or it names none (Ray's uploads)."""
    if not error.filename:
        return True
    return folder is not None and Path(os.fsdecode(error.filename)).is_relative_to(folder)


def failure_line(where: str, error: OSError, folder: str | None = None) -> str:
    """What happened to `where` (e.g. "OUT '/runs/a'"; its local path `folder`) and what to do, in
    one line; an error about a file elsewhere (Ray's temporary folder) names that file's folder."""
    reason = error.strerror or os.strerror(error.errno or 0)
    if not _inside(error, folder):
        where = repr(str(Path(os.fsdecode(error.filename)).parent))
    if error.errno in FULL:
        return f"{where} is full ({reason}): free space there, then run the same command with --resume"
    return f"cannot write to {where} ({reason}): make it writable, then run the same command with --resume"


class _RefusedWrites(logging.Filter):
    """Keeps Ray's records of a refused write off the console, and remembers the refusal."""

    def __init__(self, folder: str | None) -> None:
        super().__init__()
        self.folder = folder

    def filter(self, record: logging.LogRecord) -> bool:
        error = refused_write(record.exc_info[1], self.folder) if record.exc_info else None
        if error is None:
            # A failed sync is logged with its traceback as text (Ray's syncer), not as exc_info.
            found = _ERRNO_IN_TEXT.search(record.getMessage())
            number = int(found.group(1)) if found else None
            if number in FULL | READ_ONLY:
                error = OSError(number, os.strerror(number))
        if error is None:
            return True
        _seen.append(error)
        return False


class StopOnRefusedWrites(tune.Callback):
    """In Tune's loop: stops the sweep once a write was refused (first among the callbacks, so that
    no other reports the trial that failed of it)."""

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._stop()

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._stop()

    def _stop(self) -> None:
        if _seen:
            raise StorageFailed(_seen[0])


@contextlib.contextmanager
def watch_storage(where: str, storage: Storage) -> Iterator[None]:
    """Around Tune's run: a refused write of Ray's or genre's, in this process or a trial's, ends in
    one UserInputError about `where` (the run `storage` as the user names it)."""
    folder = storage.path if storage.is_local else None
    ray_logger = logging.getLogger("ray")
    refusals = _RefusedWrites(folder)
    handlers = list(ray_logger.handlers)
    for handler in handlers:
        handler.addFilter(refusals)
    _seen.clear()
    try:
        yield
        if _seen:  # Tune's last save of its state, after its loop
            raise StorageFailed(_seen[0])
    except Exception as error:
        refused = refused_write(error, folder)
        if refused is None:
            raise
        raise UserInputError(failure_line(where, refused, folder)) from None
    finally:
        for handler in handlers:
            handler.removeFilter(refusals)
        _seen.clear()


@contextlib.contextmanager
def writing_into(where: str, folder: Path) -> Iterator[None]:
    """Around genre's own writes into `folder` (named `where` for the user): a refused one ends in one
    UserInputError."""
    try:
        yield
    except OSError as error:
        refused = refused_write(error, str(folder))
        if refused is None:
            raise
        raise UserInputError(failure_line(where, refused, str(folder))) from None


def check_storage_answers(config: SweepConfig) -> None:
    """Refuse, in one line, a run storage on an object store (--storage s3://...) that does not answer;
    on --resume, the one the sweep in OUT records unless --storage is given again."""
    location = config.storage
    if location is None and config.resume:
        from genre.sweep.record import read_sweep_record

        record = read_sweep_record(config.out)
        location = record.storage if record else None
    if location is None or not is_uri(str(location)):
        return
    storage = open_storage(location)
    try:
        storage.info()
    except OSError as error:
        raise UserInputError(f"cannot reach the run storage {storage}: {first_line(error)}") from None
