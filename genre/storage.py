"""Where genre reads and writes beside the machine's own files: a local or NFS path, or an s3:// or
gs:// URI (pyarrow filesystems, with the machine's usual cloud credentials).

A sweep's run state: Ray Tune and Ray Train write it there, and the workers write each trial's best
checkpoint there, so on a cluster of several nodes it must be storage that every node reaches.
A dataset: `genre prepare` reads SRC's audio and writes OUT's shards and manifest there, and a
sweep's workers read DATA's shards from there.
A location is kept as text (a path or a URI, query options included, e.g.
`s3://bucket/runs?region=eu-west-1`): it pickles into Ray workers, and each process opens its own
pyarrow filesystem from it.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from data_pipeline.errors import UserInputError


@dataclass(frozen=True)
class Storage:
    """A folder or file in a pyarrow filesystem, named by the path or URI it was opened from."""

    location: str
    filesystem: pafs.FileSystem
    path: str  # the location inside `filesystem`

    @property
    def is_local(self) -> bool:
        """True for a path of this machine's file tree (a local disk or an NFS mount)."""
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def child(self, *names: str) -> Storage:
        """The location `names` below this one (query options of a URI are kept)."""
        return Storage(_join(self.location, *names), self.filesystem, posixpath.join(self.path, *names))

    def exists(self) -> bool:
        return self.filesystem.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.filesystem.get_file_info(self.path).type == pafs.FileType.File

    def info(self) -> pafs.FileInfo:
        """What is at this location (its type, and a file's size)."""
        return self.filesystem.get_file_info(self.path)

    def files(self) -> list[str]:
        """Every file below this folder, by its path relative to it (POSIX style), sorted; none if absent.

        On an object store a folder is the prefix of its objects' names: listing it is one request
        per thousand files, and reads no file.
        """
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        found = [
            info.path for info in self.filesystem.get_file_info(selector) if info.type == pafs.FileType.File
        ]
        return sorted(posixpath.relpath(path, self.path) for path in found)

    def make_dirs(self) -> None:
        self.filesystem.create_dir(self.path, recursive=True)

    def read_bytes(self) -> bytes:
        with self.filesystem.open_input_stream(self.path) as stream:
            return stream.read()

    def write_bytes(self, data: bytes) -> None:
        """Replace the file whole: a reader sees the old content or the new one, never half.

        On a file tree through a hidden temporary file and a rename; an object store publishes an
        object only when its upload completes.
        """
        if not self.is_local:
            with self.filesystem.open_output_stream(self.path) as stream:
                stream.write(data)
            return
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        partial.write_bytes(data)
        os.replace(partial, target)

    def delete_file(self) -> None:
        self.filesystem.delete_file(self.path)

    def __str__(self) -> str:
        """The location for messages, without a secret key written into the URI."""
        return redact(self.location)


def open_storage(location: str | os.PathLike[str]) -> Storage:
    """A path (made absolute) or a URI that pyarrow can open; a clear error for anything else."""
    text = os.fspath(location)
    if not is_uri(text):
        path = str(Path(text).expanduser().resolve())
        return Storage(path, pafs.LocalFileSystem(), path)
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError, pa.ArrowException) as error:
        raise UserInputError(f"cannot open storage {text!r}: {first_line(error)}") from None
    return Storage(text, filesystem, path)


def redact(location: str) -> str:
    """A path or URI for messages and records: a secret key written into a URI shows as `***`."""
    parts = urlsplit(location)
    if not is_uri(location) or parts.password is None:
        return location
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def is_uri(location: str) -> bool:
    """True for `scheme://...` (s3, gs, hdfs, file, ...); False for a plain path."""
    scheme = urlsplit(location).scheme
    # A one-letter "scheme" is a Windows drive (C:\...), not a filesystem.
    return len(scheme) > 1 and "://" in location


def _join(location: str, *names: str) -> str:
    if not is_uri(location):
        return os.path.join(location, *names)
    parts = urlsplit(location)
    return urlunsplit(parts._replace(path=posixpath.join(parts.path or "/", *names)))


def first_line(error: BaseException) -> str:
    """An error's first line, for a one-line message (a cloud SDK's errors run to several)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
