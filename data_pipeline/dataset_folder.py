"""OUT of `genre prepare` on a file tree: what may be written or replaced there, and moving a
finished dataset in (an object store's OUT: data_pipeline.dataset_prefix).

A dataset is assembled in a hidden sibling of OUT and renamed into place only once complete, so a
crash part-way never leaves an OUT that looks finished. Nothing of the user's is ever deleted: SRC
and OUT may not be nested, and `--overwrite` replaces only a folder that holds nothing but the files
its dataset's manifest lists.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from data_pipeline.discover import Discovery
from data_pipeline.errors import UserInputError
from data_pipeline.manifest import MANIFEST_NAME, is_dataset, read_manifest, write_manifest
from data_pipeline.processes import pid_alive
from data_pipeline.storage import open_storage, redact

# In a partial dataset folder: "<host> <pid>" of the run writing it.
OWNER_FILE = ".owner"


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an OUT that must not be written: a file, someone's folder, a dataset without --overwrite."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"OUT {str(out)!r} exists and is not a folder")
    if is_dataset(out):
        if not overwrite:
            raise UserInputError(f"OUT {str(out)!r} already holds a dataset; pass --overwrite to replace it")
        foreign = files_not_in_manifest(out)
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise UserInputError(
                f"OUT {str(out)!r} holds files its dataset does not list ({foreign[0]}{more}); "
                "--overwrite replaces a dataset's own files only: move the others out first"
            )
    elif out.is_dir() and any(out.iterdir()):
        # Never delete a folder genre did not make, --overwrite or not.
        raise UserInputError(f"OUT {str(out)!r} is not empty and is not a genre dataset; choose another")


def check_apart(source: str | Path, out: str | Path, discovery: Discovery) -> None:
    """Refuse SRC and OUT nested either way, or a source whose audio lies inside OUT.

    OUT inside SRC would be read as audio by the next prepare; SRC inside OUT would be deleted by
    `--overwrite`. Paths and URIs are apart unless both name the same object store.
    """
    src_place, out_place = open_storage(source), open_storage(out)
    if type(src_place.filesystem) is not type(out_place.filesystem):
        return  # a path and a URI, or two kinds of store
    shown_src, shown_out = redact(str(source)), redact(str(out))
    if src_place.is_local:
        src, dst = Path(src_place.path), Path(out_place.path)  # made absolute, links resolved
        src_is_folder = src.is_dir()
    else:  # an object store's paths start with the bucket's name
        src, dst = PurePosixPath(src_place.path), PurePosixPath(out_place.path)
        src_is_folder = True  # a CSV SRC is local
    if src_is_folder and dst.is_relative_to(src):  # OUT = SRC included
        raise UserInputError(f"OUT {shown_out!r} is inside SRC {shown_src!r}; choose an OUT outside SRC")
    if src.is_relative_to(dst):
        raise UserInputError(
            f"SRC {shown_src!r} is inside OUT {shown_out!r}, which a dataset would replace; "
            "choose an OUT outside SRC"
        )
    if src_place.is_local:
        inside = [track.path for track in discovery.tracks if Path(track.path).is_relative_to(dst)]
        if inside:
            raise UserInputError(
                f"SRC names audio inside OUT {shown_out!r} ({inside[0]}), which a dataset would replace; "
                "choose an OUT that holds none of the audio"
            )


def files_not_in_manifest(dataset: Path) -> list[str]:
    """Files (and links) in a dataset folder that its manifest does not list, relative to it."""
    manifest = read_manifest(dataset)
    listed = {MANIFEST_NAME} | {shard["path"] for shards in manifest["shards"].values() for shard in shards}
    found = []
    for folder, subfolders, files in os.walk(dataset):
        # A link to a folder is the user's, not a split folder: reported, never walked into.
        links = [name for name in subfolders if (Path(folder) / name).is_symlink()]
        for name in sorted([*files, *links]):
            relative = (Path(folder) / name).relative_to(dataset).as_posix()
            if relative not in listed:
                found.append(relative)
    return found


class StagingWriter:
    """Where a run writes a dataset on a file tree: a staging folder, renamed to OUT once complete."""

    def __init__(self, out: Path, overwrite: bool, progress: Callable[[str], None]) -> None:
        # An OUT that is a link is replaced where it leads: the link stays, and leads to the new dataset
        # (replaced itself, it became a folder and left the old link behind as a hidden `.replaced-`).
        out = out.resolve()
        for stale in remove_interrupted_staging(out):
            progress(f"removed {stale.name}, left by an interrupted run")
        self.out, self.overwrite = out, overwrite
        self.folder = make_staging(out)
        # Where the featurizing tasks write <split>/<shard file>, and what ends their names.
        self.shards, self.tag = str(self.folder), ""

    def publish(self, manifest: dict[str, Any]) -> None:
        """Write the manifest and move the finished dataset into place."""
        write_manifest(self.folder, manifest)
        move_into_place(self.folder, self.out, self.overwrite)

    def abandon(self) -> None:
        """Remove what the run wrote: OUT is as it was."""
        shutil.rmtree(self.folder, ignore_errors=True)


def owner_line() -> str:
    """Who is writing a partial dataset, "<host> <pid>": a later run removes it once this process is gone."""
    return f"{socket.gethostname()} {os.getpid()}\n"


def abandoned(owner: str | None) -> bool:
    """Whether the run an owner line names is gone: it ran on this machine, and its process has ended.

    A run of another machine cannot be checked, and is left alone. No line (or a garbled one) means
    a run killed a moment after it started.
    """
    try:
        host, pid = (owner or "").split()
        number = int(pid)
    except ValueError:
        host, number = socket.gethostname(), 0
    return host == socket.gethostname() and not pid_alive(number)


def make_staging(out: Path) -> Path:
    """A new hidden sibling of OUT to assemble the dataset in (one filesystem: the move is a rename)."""
    staging = out.parent / f"{_staging_prefix(out)}{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
        (staging / OWNER_FILE).write_text(owner_line())
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserInputError(f"cannot write next to OUT {str(out)!r}: {error.strerror}") from None
    return staging


def remove_interrupted_staging(out: Path) -> list[Path]:
    """Delete the partial folders of OUT whose run was killed (its process gone, on this machine)."""
    removed = []
    for folder in out.parent.glob(f"{_staging_prefix(out)}*"):
        try:
            owner: str | None = (folder / OWNER_FILE).read_text()
        except OSError:
            owner = None  # killed before it named its owner, a moment after it was made
        if abandoned(owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def move_into_place(staging: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished dataset to OUT; an old dataset there is checked again, then replaced."""
    (staging / OWNER_FILE).unlink()
    if not out.exists():
        os.replace(staging, out)
        return
    # Checked again: a file may have been put into OUT while the dataset was being made.
    check_out(out, overwrite)
    retired = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:8]}"
    os.replace(out, retired)
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)


def _staging_prefix(out: Path) -> str:
    return f".{out.name}.partial-"
