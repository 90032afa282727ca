"""An HTTP request's audio body to a file the predictor reads, or why it is refused (a 4xx with a one-line
JSON error); runs in the Serve replica actors."""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse

from data_pipeline.audio import AudioDecodeError, NotAudioError, probe_audio

# A 6-minute CD-quality WAV; compressed formats hold far longer music in it. Every request a replica
# holds keeps its body in memory while it is read.
MAX_BODY_BYTES = 64 * 2**20
# What an answer's "path" says of a body posted without `?name=`.
UNNAMED_UPLOAD = "upload"
ROUTE = "/"


class RequestRefused(Exception):
    """A request that gets no prediction: its HTTP status and why, for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, str(self), self.headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """`{"error": message}` on one line, whatever the message held."""
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)


@dataclass(frozen=True)
class Upload:
    """A request's audio, written to the replica's disk: soundfile needs a seekable file for some formats."""

    name: str  # what the answer's "path" says: the request's `?name=`, else UNNAMED_UPLOAD
    path: Path


async def receive_upload(request: Request, folder: Path, max_bytes: int) -> Upload:
    """The request's body as a file in `folder` once it is audio; RequestRefused otherwise."""
    if request.url.path != ROUTE:
        raise RequestRefused(404, f"no such path {request.url.path!r}: POST the audio file to {ROUTE}")
    if request.method != "POST":
        raise RequestRefused(
            405, f"{request.method} is not served: POST the audio file to {ROUTE}", {"Allow": "POST"}
        )
    body = await _read_body(request, max_bytes)
    if not body:
        raise RequestRefused(400, "empty body: POST the audio file's bytes as the request body")
    name = request.query_params.get("name") or UNNAMED_UPLOAD
    # Writing and probing a large body would hold up the replica's other requests: a thread does it.
    return Upload(name, await asyncio.to_thread(_write_audio, body, folder, name))


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused as soon as it is known to be over `max_bytes` (declared, or as it arrives)."""
    too_large = RequestRefused(
        413, f"the body is over the limit of {max_bytes} bytes ({max_bytes / 2**20:g} MiB) per file"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _write_audio(body: bytes, folder: Path, name: str) -> Path:
    """The body in a file of its own in `folder`, kept only if its header and first samples decode."""
    handle, written = tempfile.mkstemp(dir=folder, prefix="upload-")
    path = Path(written)
    with os.fdopen(handle, "wb") as file:
        file.write(body)
    try:
        probe_audio(path, min_seconds=0.0)  # the length is the predictor's to judge, by its windows
    except AudioDecodeError as error:
        path.unlink(missing_ok=True)
        status = 415 if isinstance(error, NotAudioError) else 422
        raise RequestRefused(status, name_the_upload(str(error), path, name)) from None
    return path


def name_the_upload(message: str, path: Path, name: str) -> str:
    """A message about the replica's file said of the client's: its temporary path is the replica's own."""
    return message.replace(str(path), name)
