"""The audio files that `genre predict`'s SOURCEs name (folders, list files, object-store prefixes, single
files); runs in the `genre` process."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs

from data_pipeline.audio import AUDIO_EXTENSIONS, is_audio_path
from data_pipeline.errors import UserInputError
from data_pipeline.storage import first_line, is_uri, join_location, open_storage, public_location

# A SOURCE with one of these suffixes is a list of files, one path or URI a line; never audio, whose
# suffixes (data_pipeline.audio.AUDIO_EXTENSIONS) are others.
LIST_SUFFIXES = (".txt", ".lst")
COMMENT = "#"


@dataclass(frozen=True)
class SourceFile:
    """One file to predict: where a task opens it, and the name the output records for it."""

    location: str  # a path, or a URI with any credentials it was given (travels in Ray's memory only)
    path: str  # the path, or the URI without its credentials: the output's `path`, the resume key


def is_list_file(source: str) -> bool:
    """True for a local SOURCE that is a list of files (a .txt or .lst suffix, in any case)."""
    return not is_uri(source) and Path(source).suffix.lower() in LIST_SUFFIXES


def is_collection(source: str) -> bool:
    """True for a SOURCE that names many files: a folder, a list file or an object-store prefix."""
    if is_list_file(source):
        return True
    if not is_uri(source):
        return Path(source).expanduser().is_dir()
    return _info(source).type == pafs.FileType.Directory


def list_sources(sources: Sequence[str]) -> list[SourceFile]:
    """Every file the SOURCEs name, once each, in their order; a SOURCE that is not there is refused."""
    seen: dict[str, SourceFile] = {}
    for source in sources:
        for found in _files_of(source):
            seen.setdefault(found.path, found)
    return list(seen.values())


def _files_of(source: str) -> list[SourceFile]:
    if is_list_file(source):
        return _listed(Path(source).expanduser())
    if is_uri(source):
        kind = _info(source).type
        if kind == pafs.FileType.NotFound:
            shown = open_storage(source)
            raise UserInputError(f"SOURCE {shown} does not exist (no bucket, or no object there)")
        if kind == pafs.FileType.Directory:
            return _below_prefix(source)
        return [SourceFile(source, public_location(source))]
    path = Path(source).expanduser()
    if not path.exists():
        raise UserInputError(f"SOURCE {source!r} does not exist")
    if path.is_dir():
        return _below_folder(path)
    resolved = str(path.resolve())
    return [SourceFile(resolved, resolved)]


def _below_folder(folder: Path) -> list[SourceFile]:
    root = open_storage(folder)
    return [
        SourceFile(location, location)
        for location in (posixpath.join(root.path, name) for name in _audio_names(root.files()))
    ]


def _below_prefix(prefix: str) -> list[SourceFile]:
    try:
        names = open_storage(prefix).files()
    except OSError as error:  # credentials, permissions, the network
        raise UserInputError(f"cannot list SOURCE {open_storage(prefix)}: {first_line(error)}") from None
    files = []
    for name in _audio_names(names):
        # The prefix as given: credentials written into its URI reach the tasks that read the file.
        location = join_location(prefix, *PurePosixPath(name).parts)
        files.append(SourceFile(location, public_location(location)))
    return files


def _audio_names(names: list[str]) -> list[str]:
    """The audio files among a folder's files (relative POSIX names), hidden files and folders left out."""
    return [
        name
        for name in names
        if is_audio_path(PurePosixPath(name))
        and not any(part.startswith(".") for part in PurePosixPath(name).parts)
    ]


def _listed(list_file: Path) -> list[SourceFile]:
    """The files of a list: one path or URI a line (a relative path is relative to the list's folder);
    blank lines and lines starting with # are skipped. Every file listed gets its row, audio or not."""
    try:
        text = list_file.read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise UserInputError(f"cannot read the list {str(list_file)!r}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UserInputError(f"the list {str(list_file)!r} is not UTF-8 text") from None
    base = list_file.resolve().parent
    files = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith(COMMENT):
            continue
        if is_uri(entry):
            files.append(SourceFile(entry, public_location(entry)))
        else:
            resolved = str((base / Path(entry).expanduser()).resolve())
            files.append(SourceFile(resolved, resolved))
    return files


def _info(uri: str) -> pafs.FileInfo:
    try:
        return open_storage(uri).info()
    except OSError as error:
        raise UserInputError(f"cannot reach SOURCE {open_storage(uri)}: {first_line(error)}") from None


def no_audio_message(sources: Sequence[str]) -> str:
    """The one-line error for SOURCEs that name no file at all."""
    named = ", ".join(repr(str(open_storage(s)) if is_uri(s) else s) for s in sources)
    return f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {named}"
