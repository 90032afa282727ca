"""The dataset manifest: what a prepared folder holds and how it was made.

A folder is a path or an s3:// or gs:// URI (data_pipeline.storage). Its manifest is written last, so a
folder is a dataset exactly when it holds one: readers need nothing else to tell a finished dataset
from one being written (on an object store, where shards land in place, this is what makes it safe).
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from data_pipeline.errors import UserInputError
from data_pipeline.storage import Storage, first_line, open_storage

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
# Each key of the manifest's `versions` and the distribution it is read from (genre's own is genre-ray).
_VERSIONED = {
    "genre": "genre-ray",
    "torch": "torch",
    "torchaudio": "torchaudio",
    "ray": "ray",
    "pyarrow": "pyarrow",
    "soundfile": "soundfile",
    "numpy": "numpy",
}
# What training, evaluation and the benchmarks read from a manifest; without them a run would
# fail later with a KeyError far from the cause.
_REQUIRED_KEYS = ("features", "labels", "split", "counts", "shards")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape the features and the files."""
    versions = {"python": platform.python_version()}
    for name, distribution in _VERSIONED.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def is_dataset(folder: str | Path) -> bool:
    """True when `folder` holds a finished dataset (the manifest is written last)."""
    return _manifest_file(folder).is_file()


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> None:
    """Write `manifest.json` into `folder`, whole: a reader sees no manifest or all of it."""
    _manifest_file(folder).write_bytes((json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())


class DatasetChanged(UserInputError):
    """The dataset's manifest is no longer the one that a run started with: it was prepared again."""


def read_manifest(folder: str | Path | Storage, sha256: str | None = None) -> dict[str, Any]:
    """Load a dataset's manifest, or say clearly that the folder is not a dataset.

    With `sha256` (the manifest's hash when a run started): refused unless it is still that manifest."""
    return read_manifest_and_hash(folder, sha256)[0]


def read_manifest_and_hash(
    folder: str | Path | Storage, sha256: str | None = None
) -> tuple[dict[str, Any], str]:
    """The manifest and the SHA-256 of the very bytes it was read from (`read_manifest`)."""
    path = _manifest_file(folder)
    shown = str(folder) if path.is_local else str(open_storage(folder))
    text = _manifest_bytes(path) if path.is_file() else None
    if text is None:
        if sha256:
            raise DatasetChanged(_changed(folder, sha256, "its manifest is gone"))
        raise UserInputError(
            f"{shown!r} is not a prepared dataset (no {MANIFEST_NAME}); run `genre prepare` first"
        )
    digest = hashlib.sha256(text).hexdigest()
    if sha256 and digest != sha256:
        raise DatasetChanged(_changed(folder, sha256, f"it is {digest[:12]} now"))
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise UserInputError(f"{path} is not a manifest (expected a JSON object): prepare the dataset again")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserInputError(
            f"{path} has format_version {manifest.get('format_version')!r}; "
            f"this genre reads version {FORMAT_VERSION}: prepare the dataset again"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise UserInputError(f"{path} lacks {_listed(missing)}: prepare the dataset again")
    malformed = [key for key in _REQUIRED_KEYS if not isinstance(manifest[key], dict)]
    if malformed:
        raise UserInputError(
            f"{path} has {_listed(malformed)} that should be JSON objects: prepare the dataset again"
        )
    return manifest, digest


def check_manifest_unchanged(folder: str | Path | Storage, sha256: str) -> None:
    """Refuse, in one line, a dataset whose manifest no longer hashes to `sha256` (prepared again)."""
    text = _manifest_bytes(_manifest_file(folder))
    if text is None:
        raise DatasetChanged(_changed(folder, sha256, "its manifest is gone"))
    digest = hashlib.sha256(text).hexdigest()
    if digest != sha256:
        raise DatasetChanged(_changed(folder, sha256, f"it is {digest[:12]} now"))


def _manifest_bytes(path: Storage) -> bytes | None:
    """The manifest file's bytes; None if there is none."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:  # an object store's answer: no such bucket, no permission, no network
        raise UserInputError(f"cannot read {path}: {first_line(error)}") from None


def _changed(folder: str | Path | Storage, sha256: str, now: str) -> str:
    return (
        f"DATA {str(open_storage(folder))!r} changed while in use (its manifest's sha256 was "
        f"{sha256[:12]} at the start, {now}: prepared again?); a run reads one dataset only: run again "
        "once DATA stays as it is"
    )


def shard_path(listed: Any, folder: str | Path | Storage) -> str:
    """A shard's path as the manifest lists it, refused unless it names a file inside the dataset: a
    manifest is data, and must not make a reader open `../` or `/etc/passwd`."""
    path = PurePosixPath(listed) if isinstance(listed, str) else None
    # Exactly a normalised relative POSIX path (no `.`, `//` or trailing `/`), and nothing that a
    # filesystem could read as another place (`..`, a drive's `\\`, a URI, a NUL).
    if (
        path is None
        or path.is_absolute()
        or path.as_posix() != listed
        or ".." in path.parts
        or any(mark in listed for mark in ("\\", "://", "\x00"))
    ):
        raise UserInputError(
            f"{_manifest_file(folder)} lists a shard outside the dataset ({listed!r}); shard paths are "
            "relative to DATA, without '..': prepare the dataset again"
        )
    return listed


def _listed(keys: list[str]) -> str:
    """['a', 'b'] -> "'a', 'b'"."""
    return ", ".join(repr(key) for key in keys)


def manifest_hash(folder: str | Path | Storage) -> str:
    """SHA-256 of the manifest file: names the exact dataset a result was trained on."""
    return hashlib.sha256(_manifest_file(folder).read_bytes()).hexdigest()


def _manifest_file(folder: str | Path | Storage) -> Storage:
    return open_storage(folder).child(MANIFEST_NAME)
