"""Decoding audio files to mono waveforms at the feature sample rate."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile

if TYPE_CHECKING:
    import torch
    import torchaudio

AUDIO_EXTENSIONS = (".wav", ".au", ".flac", ".mp3", ".ogg")

# libsndfile repairs a WAV whose data was cut short and only notes it in its log,
# e.g. "data : 176400 (should be 88178)"; a cut-short file is a broken copy, not a short clip.
_TRUNCATED_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# A streaming encoder writes the WAV header before it knows the length and puts the largest
# 32-bit size there: "data : 4294967295 (should be 88200)" means "unknown", not "cut short".
_UNKNOWN_SIZE = 0xFFFFFFFF


class AudioDecodeError(Exception):
    """A file that cannot be turned into audio; the message says why, for the rejects list."""


def is_audio_path(path: Path) -> bool:
    """True for the extensions genre decodes, in any case."""
    return path.suffix.lower() in AUDIO_EXTENSIONS


def decode_mono(path: str | Path) -> tuple[np.ndarray, int, int]:
    """Decode a file with soundfile: (mono float32 samples, sample rate, source channel count)."""
    with _open_checked(Path(path)) as audio:
        samples = audio.read(dtype="float32", always_2d=True)
        rate, channels = audio.samplerate, audio.channels
    if samples.shape[0] == 0:
        raise AudioDecodeError("no audio samples in file")
    if not np.isfinite(samples).all():
        raise AudioDecodeError("audio holds NaN or infinite samples")
    # Several channels are averaged into one, as every genre model here takes mono input.
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    return np.ascontiguousarray(mono), rate, channels


def probe_audio(path: str | Path, min_seconds: float) -> None:
    """Raise AudioDecodeError where the header alone shows the file unusable or shorter than `min_seconds`.

    Reads no samples: cheap enough to run on every file of a source before decoding any.
    """
    with _open_checked(Path(path)) as audio:
        seconds = audio.frames / audio.samplerate
    if seconds < min_seconds:
        raise AudioDecodeError(f"shorter than one {min_seconds:g} s segment ({seconds:.2f} s)")


@contextmanager
def _open_checked(path: Path) -> Iterator[soundfile.SoundFile]:
    """Open `path` once its header says it is a whole audio file; any failure is an AudioDecodeError."""
    try:
        status = path.stat()
    except OSError as error:
        raise AudioDecodeError(f"cannot read file: {error.strerror}") from error
    if stat.S_ISDIR(status.st_mode):
        # `genre predict music/` is a natural thing to type; say what to pass instead.
        raise AudioDecodeError(f"a folder, not an audio file; pass the files in it (e.g. {path}/*.wav)")
    if status.st_size == 0:
        raise AudioDecodeError("empty file (0 bytes)")
    try:
        with soundfile.SoundFile(path) as audio:
            _check_not_truncated(audio.extra_info)
            yield audio
    except soundfile.LibsndfileError as error:
        raise AudioDecodeError(f"not decodable audio: {_libsndfile_reason(error)}") from error
    except (RuntimeError, ValueError, TypeError) as error:
        raise AudioDecodeError(f"not decodable audio: {error}") from error


def load_mono(path: str | Path, sample_rate: int) -> tuple[torch.Tensor, int, int]:
    """Decode and resample to `sample_rate`: (waveform [samples], source rate, source channels)."""
    import torch  # here, not at the top: discovery in the driver needs no torch (2 s of start-up)

    samples, source_rate, channels = decode_mono(path)
    waveform = torch.from_numpy(samples)
    if source_rate != sample_rate:
        waveform = _resampler(source_rate, sample_rate)(waveform)
    return waveform, source_rate, channels


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


def _libsndfile_reason(error: soundfile.LibsndfileError) -> str:
    # The message starts with "Error opening '<path>': "; the path is already in the rejects entry.
    return error.error_string if getattr(error, "error_string", None) else str(error)
