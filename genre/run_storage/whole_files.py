"""A local run storage where Ray Tune and Ray Train never leave a file half-written.

Tune and Train write their run state (Tune's experiment state, Train's checkpoint manager snapshot,
each checkpoint's files) by overwriting files in place. A disk that fills, or turns read-only, in the
middle of one left it cut short: a 0-byte snapshot that every later `--resume` failed on, a truncated
experiment state that Tune could not restore. Handed to them as their `storage_filesystem`, this
filesystem writes each file beside its target and renames it over the target once it is complete, as
an object store publishes an object only when its upload completes: a failed write leaves the last
complete version, and `--resume` continues from the last complete checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from genre.run_storage.delegating import DelegatingHandler

PARTIAL_PREFIX = ".partial-"


def whole_file_filesystem() -> pafs.FileSystem:
    """This machine's file tree (a local disk or an NFS mount), with every write whole or absent."""
    return pafs.PyFileSystem(WholeFileWrites())


class WholeFileWrites(DelegatingHandler):
    """pyarrow's LocalFileSystem, except that an output stream publishes its file only when closed
    after every write succeeded; a failed one leaves the previous file (or none), and no partial one.
    Appends go straight to the file: they cannot be made whole this way, and Tune and Train rewrite
    their state files instead."""

    def __init__(self) -> None:
        self.local = pafs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WholeFileWrites)

    def __hash__(self) -> int:
        return hash(WholeFileWrites)

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray pickles the filesystem into every trial, controller and worker process.
        return (WholeFileWrites, ())

    def get_type_name(self) -> str:
        return "local+whole-files"

    @property
    def inner(self) -> pafs.FileSystem:
        return self.local

    def copy_file(self, src: str, dest: str) -> None:
        with self.local.open_input_stream(src) as source, self.open_output_stream(dest, None) as target:
            while chunk := source.read(1 << 24):
                target.write(chunk)

    def open_output_stream(self, path: str, metadata: dict[str, str] | None) -> pa.NativeFile:
        return pa.PythonFile(_WholeFile(Path(path)), mode="w")


class _WholeFile(io.RawIOBase):
    """Writes into a hidden file beside `target`, renamed over it on close unless a write failed."""

    def __init__(self, target: Path) -> None:
        super().__init__()
        self.target = target
        self.partial = target.with_name(f"{PARTIAL_PREFIX}{target.name}.{uuid.uuid4().hex[:8]}")
        self.file = open(self.partial, "wb")  # noqa: SIM115 (closed in close(), whatever happens)
        self.failed = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except BaseException:
            self._discard()
            raise

    def tell(self) -> int:
        return self.file.tell()

    def flush(self) -> None:
        if not self.file.closed:
            try:
                self.file.flush()
            except BaseException:
                self._discard()
                raise

    def _discard(self) -> None:
        """After a failed write: the partial file goes now, not when (or if) the writer closes."""
        self.failed = True
        with contextlib.suppress(OSError):  # closing flushes, which may fail again
            self.file.close()
        self.partial.unlink(missing_ok=True)

    def close(self) -> None:
        if self.closed:
            return
        try:
            try:
                self.file.close()  # may raise what a full disk refused of the buffered bytes
            except BaseException:
                self._discard()
                raise
            if not self.failed:  # else the writer was told already, by the write that failed
                os.replace(self.partial, self.target)
        finally:
            self.partial.unlink(missing_ok=True)  # gone already once renamed
            super().close()
