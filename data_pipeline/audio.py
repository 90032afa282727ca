"""Decoding audio files to mono waveforms at the feature sample rate.

A file is a path, or an s3:// or gs:// URI (data_pipeline.storage) read through its pyarrow filesystem.
"""

from __future__ import annotations

import io
import re
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path, PurePath
from typing import IO, TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import soundfile

from data_pipeline.errors import UserInputError
from data_pipeline.storage import is_uri, open_storage, redact

if TYPE_CHECKING:
    import torch
    import torchaudio

    from data_pipeline.features import FeatureConfig

AUDIO_EXTENSIONS = (".wav", ".au", ".flac", ".mp3", ".ogg")

# libsndfile repairs a WAV whose data was cut short and only notes it in its log,
# e.g. "data : 176400 (should be 88178)"; a cut-short file is a broken copy, not a short clip.
_TRUNCATED_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# A streaming encoder writes the WAV header before it knows the length and puts the largest
# 32-bit size there: "data : 4294967295 (should be 88200)" means "unknown", not "cut short".
_UNKNOWN_SIZE = 0xFFFFFFFF
# A header read from an object store comes in one ranged request of this many bytes (a WAV's is 44,
# a FLAC's or MP3's few KB); the decoder reads beyond it only where the header sends it.
HEADER_READ_BYTES = 64 * 1024
# Samples the screen decodes of each file (probe_audio): what a header alone cannot show, cheaply.
PROBE_FRAMES = 1024
NON_SEEKABLE_BLOCK = 1 << 16


class AudioDecodeError(Exception):
    """A file that cannot be turned into audio; the message says why, for the rejects list."""


class NotAudioError(AudioDecodeError):
    """A file that holds no audio at all (empty, or a header no decoder knows): notes, artwork."""


class StorageReadError(UserInputError):
    """A file that is there but could not be read from its object store: a network or service error
    (after the filesystem's own retries), or credentials refused. Not the file's fault, so never a
    reject: `prepare` reads the file again (data_pipeline.featurize), and if it still fails, stops."""


def is_audio_path(path: PurePath) -> bool:
    """True for the extensions genre decodes, in any case."""
    return path.suffix.lower() in AUDIO_EXTENSIONS


def decode_mono(path: str | Path) -> tuple[np.ndarray, int, int]:
    """Decode a file with soundfile: (mono float32 samples, sample rate, source channel count)."""
    with _open_checked(path, whole=True) as audio:
        rate, channels = audio.samplerate, audio.channels
        samples = _read_samples(audio, -1) if audio.seekable() else _read_in_blocks(audio)
    if samples.shape[0] == 0:
        raise AudioDecodeError("no audio samples in file")
    if not np.isfinite(samples).all():
        raise AudioDecodeError("audio holds NaN or infinite samples")
    # Several channels are averaged into one, as every genre model here takes mono input.
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    return np.ascontiguousarray(mono), rate, channels


def probe_audio(path: str | Path, min_seconds: float) -> float:
    """The file's duration in seconds, from its header; AudioDecodeError where the header alone shows
    the file unusable or shorter than `min_seconds`.

    Reads only the first PROBE_FRAMES samples: cheap enough to run on every file of a source.
    """
    with _open_checked(path, whole=False) as audio:
        seconds = audio.frames / audio.samplerate
        # The first samples, read as decode_mono reads them all: a codec that fails there fails here,
        # before the file takes a place in a split.
        _read_samples(audio, min(audio.frames, PROBE_FRAMES))
    if seconds < min_seconds:
        raise AudioDecodeError(f"shorter than one {min_seconds:g} s segment ({seconds:.2f} s)")
    return seconds


def _read_samples(audio: soundfile.SoundFile, frames: int) -> np.ndarray:
    """Up to `frames` samples (-1: all) from the current position, [frames, channels] float32."""
    if audio.subtype == "PCM_16":
        # Most collections (GTZAN's .au and .wav among them) are 16-bit PCM: read as int16 and
        # scaled here, exactly libsndfile's own float conversion (x / 32768), 3x faster than it.
        return np.multiply(
            audio.read(frames, dtype="int16", always_2d=True), np.float32(1 / 32768), dtype=np.float32
        )
    return audio.read(frames, dtype="float32", always_2d=True)


def _read_in_blocks(audio: soundfile.SoundFile) -> np.ndarray:
    """All samples of a file libsndfile cannot seek in (GSM 6.10), which reads only given counts.

    Block by block to its end: the header's count is never trusted with one allocation.
    """
    blocks = [_read_samples(audio, NON_SEEKABLE_BLOCK)]
    while len(blocks[-1]) == NON_SEEKABLE_BLOCK:
        blocks.append(_read_samples(audio, NON_SEEKABLE_BLOCK))
    return np.concatenate(blocks)


@contextmanager
def _open_checked(location: str | Path, whole: bool) -> Iterator[soundfile.SoundFile]:
    """Open a file once its header says it is a whole audio file; any failure is an AudioDecodeError.

    `whole`: the samples will be read (an object store's file is fetched in one request), not only
    the header.
    """
    text = str(location)
    source = _remote_audio(text, whole) if is_uri(text) else _local_audio(Path(text))
    try:
        with source as opened, soundfile.SoundFile(opened) as audio:
            _check_not_truncated(audio.extra_info)
            yield audio
    except soundfile.LibsndfileError as error:
        _raise_failed_read(source, text)
        kind = NotAudioError if error.code == _UNRECOGNISED_FORMAT else AudioDecodeError
        raise kind(f"not decodable audio: {_libsndfile_reason(error, text)}") from error
    except (RuntimeError, ValueError, TypeError) as error:
        _raise_failed_read(source, text)
        raise AudioDecodeError(f"not decodable audio: {error}") from error


def _local_audio(path: Path) -> AbstractContextManager[Path]:
    try:
        status = path.stat()
    except OSError as error:
        raise AudioDecodeError(f"cannot read file: {error.strerror}") from error
    if stat.S_ISDIR(status.st_mode):
        # `genre predict music/` is a natural thing to type; say what to pass instead.
        raise AudioDecodeError(f"a folder, not an audio file; pass the files in it (e.g. {path}/*.wav)")
    if status.st_size == 0:
        raise NotAudioError("empty file (0 bytes)")
    return nullcontext(path)


def _remote_audio(location: str, whole: bool) -> IO[bytes]:
    """The file's bytes, or a reader that fetches its head in one request, for soundfile to decode
    (and the caller to close)."""
    target = open_storage(location)
    try:
        info = target.info()
        if info.type == pafs.FileType.NotFound:
            raise AudioDecodeError("cannot read file: No such file or directory")
        if info.type == pafs.FileType.Directory:
            raise AudioDecodeError(f"a folder, not an audio file; pass the files in it (e.g. {target}/*.wav)")
        if info.size == 0:
            raise NotAudioError("empty file (0 bytes)")
        if whole:
            return io.BytesIO(target.read_bytes())
        # The decoder's reads and seeks within the head are served from the buffer.
        head = _RemoteHead(target.filesystem.open_input_file(target.path))
        return io.BufferedReader(head, HEADER_READ_BYTES)
    except OSError as error:
        raise _storage_error(location, error) from error


class _RemoteHead(io.RawIOBase):
    """An object-store file for soundfile's header reads that keeps the error of a failed read and
    reads as ended instead: raised, soundfile's read callback would print and swallow it, and
    libsndfile report "Format not recognised". The caller raises it (_raise_failed_read)."""

    def __init__(self, native: pa.NativeFile) -> None:
        self._native = native
        self.failure: OSError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._native.read(len(buffer))
        except OSError as error:
            self.failure = self.failure or error
            return 0
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._native.seek(offset, whence)

    def tell(self) -> int:
        return self._native.tell()

    def close(self) -> None:
        self._native.close()
        super().close()


def _raise_failed_read(source: object, location: str) -> None:
    """Raise the StorageReadError behind a decoding failure of an object-store file, if there is one."""
    head = getattr(source, "raw", None)
    if isinstance(head, _RemoteHead) and head.failure is not None:
        raise _storage_error(location, head.failure) from head.failure


def _storage_error(location: str, error: OSError) -> StorageReadError:
    # The cloud SDK's reason may follow its first line ("... GetObject operation:\n<reason>").
    reason = " ".join(str(error).split()) or type(error).__name__
    return StorageReadError(f"cannot read {redact(location)}: {reason}")


def load_mono(path: str | Path, sample_rate: int) -> tuple[torch.Tensor, int, int]:
    """Decode and resample to `sample_rate`: (waveform [samples], source rate, source channels)."""
    import torch  # here, not at the top: discovery in the driver needs no torch (2 s of start-up)

    samples, source_rate, channels = decode_mono(path)
    waveform = torch.from_numpy(samples)
    if source_rate != sample_rate:
        waveform = _resampler(source_rate, sample_rate)(waveform)
    return waveform, source_rate, channels


def band_edge_hz(features: FeatureConfig) -> float:
    """The top edge of the features' mel filterbank: f_max, at most the target rate's Nyquist."""
    nyquist = features.sample_rate / 2
    return min(features.f_max, nyquist) if features.f_max else nyquist


def low_rate_note(source_rate: int, features: FeatureConfig) -> str:
    """Why a file's top mel bands are empty, when its Nyquist is below their edge; else ""."""
    edge = band_edge_hz(features)
    if source_rate / 2 >= edge:
        return ""
    # Resampling up adds no content: the bands above the file's own Nyquist sit at the dB floor.
    return (
        f"recorded at {source_rate} Hz: nothing above {source_rate / 2:g} Hz, so the mel bands from there "
        f"to {edge:g} Hz are at the floor"
    )


@lru_cache(maxsize=16)
def _resampler(source_rate: int, target_rate: int) -> torchaudio.transforms.Resample:
    import torchaudio

    # The resampling kernel depends only on the two rates; build it once per pair and process.
    return torchaudio.transforms.Resample(source_rate, target_rate)


def _check_not_truncated(log: str) -> None:
    match = _TRUNCATED_DATA.search(log)
    if match is None:
        return
    declared, present = int(match.group(1)), int(match.group(2))
    if declared != _UNKNOWN_SIZE and present < declared:
        raise AudioDecodeError(
            f"truncated file: header declares {declared} bytes of audio, file holds {present}"
        )


# libsndfile's SF_ERR_UNRECOGNISED_FORMAT: no decoder knows the header ("Format not recognised.").
_UNRECOGNISED_FORMAT = 1
# libsndfile's SFE_BAD_FILE: said of a regular file whose decoder found no stream in it, e.g. an MP3
# holding only its ID3 tag, as "File does not exist or is not a regular file (possibly a pipe?)".
_NO_STREAM = 7


def _libsndfile_reason(error: soundfile.LibsndfileError, location: str) -> str:
    # The message starts with "Error opening '<path>': "; the path is already in the rejects entry.
    if error.code == _NO_STREAM:  # the file is there and regular: _local_audio and _remote_audio saw it
        if _head(location, 3) == b"ID3":
            return "an ID3 tag with no MP3 audio after it"
        return "no audio stream that libsndfile can decode"
    return error.error_string if getattr(error, "error_string", None) else str(error)


def _head(location: str, size: int) -> bytes:
    """The file's first `size` bytes, or b"" when they cannot be read."""
    try:
        if is_uri(location):
            target = open_storage(location)
            with target.filesystem.open_input_file(target.path) as file:
                return file.read(size)
        with open(location, "rb") as file:
            return file.read(size)
    except OSError:
        return b""
