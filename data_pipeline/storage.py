"""Where genre reads and writes beside the machine's own files: a local or NFS path, or an s3:// or
gs:// URI (pyarrow filesystems, with the machine's usual cloud credentials).

A sweep's run state: Ray Tune and Ray Train write it there, and the workers write each trial's best
checkpoint there, so on a cluster of several nodes it must be storage that every node reaches.
A dataset: `genre prepare` reads SRC's audio and writes OUT's shards and manifest there, and a
sweep's workers read DATA's shards from there.
A location is named by text without credentials (a path or a URI, query options included, e.g.
`s3://bucket/runs?region=eu-west-1`): what records keep, and what opens it again with the machine's own
credentials (environment, ~/.aws, an instance role). Credentials written into a URI (`s3://KEY:SECRET@`)
live in its pyarrow filesystem only: a process that needs them is handed the `Storage` itself (Ray
carries it in memory), and messages show them masked (`KEY:***@`).
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from data_pipeline.errors import UserInputError

# Words in the name of a URI query option that carries a credential (pyarrow refuses such options in
# its URIs, but a refusal must not repeat them): a secret key, a session or access token, a password.
_SECRET_OPTION_WORDS = ("key", "secret", "token", "password", "passwd", "credential", "signature")
MASK = "***"
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://[^\s'\"]+")


@dataclass(frozen=True)
class Storage:
    """A folder or file in a pyarrow filesystem; its filesystem holds any credentials of its URI."""

    location: str  # the path or URI without credentials: what records keep
    filesystem: pafs.FileSystem = field(repr=False)
    path: str  # the location inside `filesystem`
    # The location for messages: the URI as given, its credentials masked (`KEY:***@`).
    shown: str = ""

    @property
    def is_local(self) -> bool:
        """True for a path of this machine's file tree (a local disk or an NFS mount)."""
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    @property
    def holds_credentials(self) -> bool:
        """True when its URI was given with credentials (a user part): its filesystem holds them."""
        return str(self) != self.location

    def child(self, *names: str) -> Storage:
        """The location `names` below this one (query options of a URI are kept)."""
        return Storage(
            join_location(self.location, *names),
            self.filesystem,
            posixpath.join(self.path, *names),
            join_location(str(self), *names),
        )

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
        try:
            partial.write_bytes(data)
            os.replace(partial, target)
        finally:  # a full or read-only disk: no hidden partial file left behind
            partial.unlink(missing_ok=True)

    def delete_file(self) -> None:
        self.filesystem.delete_file(self.path)

    def __str__(self) -> str:
        """The location for messages: credentials written into its URI show as `***`."""
        return self.shown or self.location


def open_storage(location: str | os.PathLike[str] | Storage) -> Storage:
    """A path (made absolute) or a URI that pyarrow can open; a clear error for anything else.

    A `Storage` is returned as it is: a process handed one (a Ray worker) keeps its credentials."""
    if isinstance(location, Storage):
        return location
    text = os.fspath(location)
    if not is_uri(text):
        path = str(Path(text).expanduser().resolve())
        return Storage(path, pafs.LocalFileSystem(), path, path)
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError, pa.ArrowException) as error:
        raise UserInputError(f"cannot open storage {redact(text)!r}: {first_line(error)}") from None
    return Storage(public_location(text), filesystem, path, redact(text))


def redact(location: str) -> str:
    """A path or URI for messages: its credentials (a password or token in the user part, a query
    option named for a key, secret, token or password) show as `***`."""
    if not is_uri(location):
        return location
    scheme, _, rest = location.partition("://")
    head, question, query = rest.partition("?")
    user_info, at, place = head.rpartition("@")
    # A secret with a "/" not written as %2F ends the URI's host part early (and pyarrow refuses the
    # URI): a user part is what comes before the last "@", unless that is a path (bucket/a@b.wav).
    if at and ("/" not in user_info or ":" in user_info.partition("/")[0]):
        user, colon, _ = user_info.partition(":")
        # A user part alone may be a token (https://TOKEN@host): masked too.
        head = f"{user}:{MASK}@{place}" if colon else f"{MASK}@{place}"
    options = "&".join(
        f"{option.partition('=')[0]}={MASK}" if _is_secret_option(option) else option
        for option in query.split("&")
    )
    return f"{scheme}://{head}{question}{options}"


def public_location(location: str) -> str:
    """A path or URI for records: without its user part and its credential options, so that it opens
    again with the machine's own credentials."""
    if not is_uri(location):
        return location
    parts = urlsplit(location)
    kept = [option for option in parts.query.split("&") if option and not _is_secret_option(option)]
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query="&".join(kept)))


def redact_text(text: str) -> str:
    """`text` with every URI in it redacted (a library's error message may repeat the URI it was given)."""
    return _URI_IN_TEXT.sub(lambda found: redact(found.group()), text)


def _is_secret_option(option: str) -> bool:
    name = unquote_plus(option.partition("=")[0]).lower()
    return name == "sig" or any(word in name for word in _SECRET_OPTION_WORDS)


def is_uri(location: str) -> bool:
    """True for `scheme://...` (s3, gs, hdfs, file, ...); False for a plain path."""
    scheme = urlsplit(location).scheme
    # A one-letter "scheme" is a Windows drive (C:\...), not a filesystem.
    return len(scheme) > 1 and "://" in location


def join_location(location: str, *names: str) -> str:
    """The path or URI `names` below `location` (a URI's query options are kept)."""
    if not is_uri(location):
        return os.path.join(location, *names)
    parts = urlsplit(location)
    return urlunsplit(parts._replace(path=posixpath.join(parts.path or "/", *names)))


def first_line(error: BaseException) -> str:
    """An error's first line, for a one-line message (a cloud SDK's errors run to several), any URI in
    it redacted."""
    return redact_text((str(error).strip().splitlines() or [type(error).__name__])[0])
