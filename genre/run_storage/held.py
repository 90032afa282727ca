"""A run storage's filesystem for Ray Tune whose pickled form holds no credentials.

Tune pickles the filesystem it is given into files: `tuner.pkl` and every experiment state (each trial's
storage context) in the run storage itself, and their copies in Ray's session folder. A pyarrow
S3FileSystem pickles its secret key with it. This filesystem holds the credentialed one in Ray's object
store (memory, never a file) and pickles as the reference to it: a Tune trial's process fetches it when it
first touches the storage. A reference read back from an older sweep's files names an object that is
gone; Tune replaces those filesystems with the one a `--resume` hands it, before any use.
"""

from __future__ import annotations

from typing import Any

import pyarrow.fs as pafs
import ray

from data_pipeline.storage import Storage
from genre.run_storage.delegating import DelegatingHandler


def held_filesystem(storage: Storage) -> pafs.FileSystem:
    """`storage`'s filesystem, held in Ray's object store for as long as this process (the driver) runs."""
    return pafs.PyFileSystem(HeldFilesystem(str(storage), ray.put(storage.filesystem), storage.filesystem))


class HeldFilesystem(DelegatingHandler):
    """Every call goes to the filesystem in Ray's object store, fetched once per process."""

    def __init__(self, shown: str, held: ray.ObjectRef, filesystem: pafs.FileSystem | None = None) -> None:
        self.shown, self.held = shown, held
        self._filesystem = filesystem

    def __reduce__(self) -> tuple[Any, ...]:
        # The reference and the location as messages show it (credentials masked): nothing secret.
        return (HeldFilesystem, (self.shown, self.held))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HeldFilesystem) and other.held == self.held

    def __hash__(self) -> int:
        return hash(self.held)

    @property
    def inner(self) -> pafs.FileSystem:
        if self._filesystem is None:
            self._filesystem = ray.get(self.held)
        return self._filesystem

    def get_type_name(self) -> str:
        return "genre-held"

    def delete_root_dir_contents(self) -> None:
        raise OSError(f"refusing to delete everything in {self.shown}")
