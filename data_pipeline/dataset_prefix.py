"""OUT of `genre prepare` on an object store (s3://, gs://): shards written in place, the manifest last.

An object store cannot rename a folder, so a run writes its shards straight under OUT and makes OUT
a dataset by writing manifest.json after the last shard. Readers require the manifest and read only
the shards it lists: a prefix without one (a run still writing, or killed) is never read as a dataset.

Each run ends its shard names with a tag of its own (`train/part-00000-1a2b3c4d.parquet`), so a
dataset being replaced stays whole and readable until the new manifest replaces the old one, in one
upload; only then are the files the old manifest lists deleted. While a run writes, the object
`OUT/.partial-<tag>` names its host and process. A later run deletes the files of a run whose process
is gone from its machine (that marker and the run's tagged shards, never a file a manifest lists), as
it removes a local staging folder; a run of another machine is left alone, and named.

Otherwise the rules of a folder: a prefix holding anything else is never written into, and
`--overwrite` deletes only the files the old manifest lists.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

import pyarrow.fs as pafs

from data_pipeline.dataset_folder import abandoned, owner_line
from data_pipeline.errors import UserInputError
from data_pipeline.manifest import MANIFEST_NAME, read_manifest, write_manifest
from data_pipeline.storage import Storage, first_line

MARKER_PREFIX = ".partial-"
# A shard of a run that writes in place: data_pipeline.shards.shard_name(index, tag).
_TAGGED_SHARD = re.compile(r"^[^/]+/part-\d{5}-(?P<tag>[0-9a-f]{8})\.parquet$")


def check_prefix(out: Storage, overwrite: bool) -> None:
    """Refuse an OUT that must not be written: an object, someone's files, a dataset without --overwrite."""
    files = _files(out)
    runs = _runs(files)
    ours = {f"{MARKER_PREFIX}{tag}" for tag in runs} | {name for name in files if _shard_run(name) in runs}
    if MANIFEST_NAME in files:
        if not overwrite:
            raise UserInputError(f"OUT {str(out)!r} already holds a dataset; pass --overwrite to replace it")
        listed = _listed(read_manifest(out))
        foreign = [name for name in files if name not in listed and name not in ours]
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise UserInputError(
                f"OUT {str(out)!r} holds files its dataset does not list ({foreign[0]}{more}); "
                "--overwrite replaces a dataset's own files only: move the others out first"
            )
    elif set(files) - ours:
        # Never write among files genre did not make, --overwrite or not.
        raise UserInputError(f"OUT {str(out)!r} is not empty and is not a genre dataset; choose another")


class PrefixWriter:
    """Where a run writes a dataset on an object store: its tagged shards under OUT, the manifest last."""

    def __init__(self, out: Storage, overwrite: bool, progress: Callable[[str], None]) -> None:
        self.out, self.overwrite = out, overwrite
        for note in _remove_interrupted_runs(out):
            progress(note)
        self.tag = uuid.uuid4().hex[:8]
        self.marker = out.child(f"{MARKER_PREFIX}{self.tag}")
        try:
            self.marker.write_bytes(owner_line().encode())
        except OSError as error:
            raise UserInputError(f"cannot write to OUT {str(out)!r}: {first_line(error)}") from None
        # Where the featurizing tasks write <split>/<shard file>, and what ends their names.
        self.shards = out

    def publish(self, manifest: dict[str, Any]) -> None:
        """Make OUT the new dataset (its manifest), then delete the files of the one it replaces."""
        # Checked again: a file may have been put into OUT while the dataset was being made.
        check_prefix(self.out, self.overwrite)
        old = _current_manifest(self.out)
        write_manifest(self.out, manifest)
        # Only files that are in OUT: a manifest naming `../elsewhere` deletes nothing outside it.
        _delete(self.out, (_listed(old) - _listed(manifest)) & set(_files(self.out)) if old else ())
        self.marker.delete_file()

    def abandon(self) -> None:
        """Delete what this run wrote (never a file that a manifest in OUT lists)."""
        with suppress(OSError, UserInputError):  # the error that stopped the run is the one to show
            _remove_run(self.out, self.tag, _files(self.out))


def _remove_interrupted_runs(out: Storage) -> list[str]:
    """Delete the files of the runs whose process is gone from this machine; say what was done."""
    files = _files(out)
    notes = []
    for tag in sorted(_runs(files)):
        marker = out.child(f"{MARKER_PREFIX}{tag}")
        try:
            owner: str | None = marker.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            owner = None  # no marker: no run owns these shards any more
        except OSError as error:
            # Unknown (a throttled or failed read): another machine's live run must not lose its shards.
            notes.append(
                f"left the shards of run {tag} alone: its marker {marker} is unreadable ({first_line(error)})"
            )
            continue
        if abandoned(owner):
            _remove_run(out, tag, files)
            notes.append(f"removed the shards of run {tag}, left in OUT by an interrupted run")
        else:
            notes.append(
                f"OUT holds the shards of run {tag} ({(owner or '').strip()}), still writing or of another "
                f"machine; they are no part of the dataset: once that run is over, delete {marker} and "
                f"the shards ending in -{tag}.parquet"
            )
    return notes


def _remove_run(out: Storage, tag: str, files: list[str]) -> None:
    """Delete a run's shards, then its marker (a marker outlives its shards: a later run finds them)."""
    old = _current_manifest(out)
    listed = _listed(old) if old else set()
    _delete(out, [name for name in files if _shard_run(name) == tag and name not in listed])
    _delete(out, [f"{MARKER_PREFIX}{tag}"])


def _current_manifest(out: Storage) -> dict[str, Any] | None:
    return read_manifest(out) if out.child(MANIFEST_NAME).is_file() else None


def _files(out: Storage) -> list[str]:
    """The files under OUT; a bucket that does not exist, or an object named OUT, is refused."""
    try:
        bucket = out.path.split("/", 1)[0]
        if bucket and out.filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise UserInputError(f"OUT {str(out)!r}: the bucket {bucket!r} does not exist; create it first")
        if out.info().type == pafs.FileType.File:
            raise UserInputError(f"OUT {str(out)!r} exists and is not a folder")
        return out.files()
    except OSError as error:  # credentials, permissions, the network
        raise UserInputError(f"cannot list OUT {str(out)!r}: {first_line(error)}") from None


def _runs(files: list[str]) -> set[str]:
    """The tags of the runs that have written, or are writing, in OUT without finishing."""
    return {
        name[len(MARKER_PREFIX) :] for name in files if name.startswith(MARKER_PREFIX) and "/" not in name
    }


def _shard_run(name: str) -> str | None:
    """The tag of the run that wrote a file of OUT, if it is a tagged shard."""
    match = _TAGGED_SHARD.match(name)
    return match.group("tag") if match else None


def _listed(manifest: dict[str, Any]) -> set[str]:
    return {MANIFEST_NAME} | {shard["path"] for shards in manifest["shards"].values() for shard in shards}


def _delete(out: Storage, names: Iterable[str]) -> None:
    for name in names:
        with suppress(FileNotFoundError):
            out.child(name).delete_file()
