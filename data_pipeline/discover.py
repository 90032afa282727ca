"""Finding the labelled audio files of a source: a `<genre>/<file>` folder or a `path,label` CSV.

Every file of a genre is a track whatever its name: what it holds decides, when the screen reads its
header (data_pipeline.screen), as `genre predict` decodes any file it is given.

A folder may also be an s3:// or gs:// prefix (data_pipeline.storage), listed in one pass; a CSV is local.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs

from data_pipeline.audio import AUDIO_EXTENSIONS, is_audio_path
from data_pipeline.errors import UserInputError
from data_pipeline.storage import Storage, first_line, is_uri, join_location, open_storage


@dataclass(frozen=True)
class Track:
    """One labelled audio file. `track_id` is its path relative to the source, POSIX style; `path`
    is where it is read from (a path, or a URI)."""

    path: str
    track_id: str
    genre: str


@dataclass(frozen=True)
class Reject:
    """A file that was not used, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class Discovery:
    """What a source holds: usable tracks, and the files skipped before decoding."""

    source: str
    kind: str
    tracks: list[Track] = field(default_factory=list)
    skipped: list[Reject] = field(default_factory=list)
    # The usable tracks' duration by their headers, once screened (data_pipeline.screen); else 0.
    audio_seconds: float = 0.0

    @property
    def genres(self) -> list[str]:
        """Label names, sorted: a label's index is its position here."""
        return sorted({track.genre for track in self.tracks})


def discover(source: str | Path) -> Discovery:
    """List the tracks of a folder `<genre>/<file>` (a path or a URI) or a CSV of `path,label`."""
    if is_uri(str(source)):
        root = open_storage(str(source))
        shown, discovery = str(root), _discover_store(root, str(source))
    else:
        shown, discovery = str(Path(source).expanduser()), _discover_local(Path(source).expanduser())
    if not discovery.tracks:
        raise UserInputError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in {shown!r}; "
            "expected SRC/<genre>/<file> or a CSV of path,label"
        )
    discovery.tracks.sort(key=lambda track: track.track_id)
    return discovery


def _discover_local(source: Path) -> Discovery:
    if not source.exists():
        raise UserInputError(f"source {str(source)!r} does not exist")
    if source.is_dir():
        return _discover_folder(source)
    if source.suffix.lower() == ".csv":
        return _discover_csv(source)
    raise UserInputError(
        f"source {str(source)!r} is neither a folder of <genre>/<file> nor a .csv of path,label"
    )


def _discover_store(root: Storage, given: str) -> Discovery:
    """A `<genre>/<file>` prefix of an object store (`given`, as the user wrote it): one listing, no file
    read."""
    try:
        kind = root.info().type
        if kind == pafs.FileType.NotFound:
            raise UserInputError(
                f"source {str(root)!r} does not exist (no bucket, or nothing under that prefix)"
            )
        if kind != pafs.FileType.Directory:
            raise UserInputError(
                f"source {str(root)!r} is not a folder of <genre>/<file>; a CSV of path,label must be a "
                "local file"
            )
        files = root.files()
    except OSError as error:  # credentials, permissions, the network
        raise UserInputError(f"cannot list source {str(root)!r}: {first_line(error)}") from None
    discovery = Discovery(source=str(root), kind="folder")
    for name in files:
        relative = PurePosixPath(name)
        if any(part.startswith(".") for part in relative.parts):
            continue  # hidden files and folders, as in a local folder
        location = root.child(*relative.parts)
        if len(relative.parts) < 2:
            if is_audio_path(relative):
                discovery.skipped.append(Reject(str(location), "audio file not inside a <genre>/ folder"))
        else:
            # Read by Ray Data's tasks, which open the track from its text: any credentials of SRC's URI
            # travel with it, in memory (records and messages show it redacted).
            track = Track(join_location(given, *relative.parts), relative.as_posix(), relative.parts[0])
            discovery.tracks.append(track)
    return discovery


def _discover_folder(root: Path) -> Discovery:
    discovery = Discovery(source=str(root.resolve()), kind="folder")
    for path in _visible_files(root, discovery.skipped):
        relative = path.relative_to(root)
        if len(relative.parts) < 2:
            # A README or CSV beside the genre folders is expected; only loose audio is reported.
            if is_audio_path(path):
                discovery.skipped.append(Reject(str(path), "audio file not inside a <genre>/ folder"))
        else:
            discovery.tracks.append(Track(str(path.resolve()), relative.as_posix(), relative.parts[0]))
    return discovery


def _visible_files(root: Path, skipped: list[Reject]) -> Iterator[Path]:
    """The files below `root`, sorted, through symbolic links; links that lead nowhere go to `skipped`.

    Paths stay spelled under `root` (a linked `metal/` folder yields `root/metal/x.wav`), so track ids
    name where the user put a file, not where its bytes live.
    """
    yield from _walk(root, frozenset({_identity(root.stat())}), skipped)


def _walk(folder: Path, ancestors: frozenset[tuple[int, int]], skipped: list[Reject]) -> Iterator[Path]:
    # `ancestors` are the folders this one is inside of, by device and inode: a link back to one of
    # them (rock/loop -> ..) would recurse forever, while two links to the same folder are fine.
    try:
        children = sorted(folder.iterdir())
    except OSError as error:
        skipped.append(Reject(str(folder), f"cannot read folder: {error.strerror}"))
        return
    for child in children:
        if child.name.startswith("."):
            continue  # hidden files (.DS_Store, editor droppings) are nobody's music
        try:
            status = child.stat()  # follows symbolic links
        except OSError as error:
            skipped.append(Reject(str(child), _unreachable(child, error)))
            continue
        if stat.S_ISDIR(status.st_mode):
            if _identity(status) in ancestors:
                reason = f"symbolic link loop: leads back to {child.resolve()}, a folder it is inside of"
                skipped.append(Reject(str(child), reason))
            else:
                yield from _walk(child, ancestors | {_identity(status)}, skipped)
        elif stat.S_ISREG(status.st_mode):
            yield child


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _unreachable(path: Path, error: OSError) -> str:
    """Why `path` cannot be followed, for the rejects list."""
    if error.errno == errno.ELOOP:
        return "symbolic link loop: its chain of links never reaches a file or folder"
    if error.errno in (errno.ENOENT, errno.ENOTDIR) and path.is_symlink():
        return f"broken symbolic link: its target {os.readlink(path)} does not exist"
    return f"cannot read: {error.strerror}"


def _discover_csv(csv_path: Path) -> Discovery:
    discovery = Discovery(source=str(csv_path.resolve()), kind="csv")
    base = csv_path.resolve().parent
    seen_ids: set[str] = set()
    seen_files: set[Path] = set()
    for line_number, row in enumerate(csv.reader(io.StringIO(_read_csv_text(csv_path), newline="")), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or (line_number == 1 and [c.lower() for c in cells] == ["path", "label"]):
            continue
        if len(cells) != 2 or not all(cells):
            raise UserInputError(f"{csv_path}:{line_number}: expected two columns 'path,label', got {row!r}")
        written, genre = cells
        path = (base / written).resolve()
        track_id = _csv_track_id(written, base)
        if track_id in seen_ids or path in seen_files:
            discovery.skipped.append(Reject(str(path), f"listed twice (line {line_number})"))
        elif not path.is_file():
            discovery.skipped.append(Reject(str(path), "file not found"))
        else:
            discovery.tracks.append(Track(str(path), track_id, genre))
        seen_ids.add(track_id)
        seen_files.add(path)
    return discovery


def _read_csv_text(csv_path: Path) -> str:
    # utf-8-sig: spreadsheet programs often save a byte-order mark, which would glue onto the first path.
    try:
        data = csv_path.read_bytes()
    except OSError as error:
        raise UserInputError(f"cannot read {csv_path}: {error.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UserInputError(
            f"{csv_path}:{line}: not UTF-8 text (byte {data[error.start]:#04x}); save the CSV as UTF-8"
        ) from None


def _csv_track_id(written: str, base: Path) -> str:
    """The row's path relative to the CSV's folder, normalised (`./a/../b.wav` -> `b.wav`, `../x.wav` stays).

    An absolute path outside that folder stays absolute: a chain of `../` to it would say nothing more.
    """
    normal = Path(os.path.normpath(base / written))
    if not Path(written).is_absolute() or normal.is_relative_to(base):
        return Path(os.path.relpath(normal, base)).as_posix()
    return normal.as_posix()
