"""A file decoded into its log-mel windows, or its error: the Ray Data task before the model actors; runs in
Ray Data's task workers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from data_pipeline.features import FeatureConfig, LogMelExtractor
from genre.predict import decode_file


@dataclass(frozen=True)
class DecodedRow:
    """One file between decoding and the model: its windows' float16 bytes [windows, n_mels, frames]."""

    path: str  # as the output records it (without credentials)
    mels: bytes
    windows: int
    error: str = ""
    note: str = ""


@lru_cache(maxsize=4)
def _extractor(features: FeatureConfig) -> LogMelExtractor:
    # Filter banks and windows are built once per worker process, not once per file.
    return LogMelExtractor(features)


def decode_rows(row: dict[str, Any], features: FeatureConfig) -> list[dict[str, Any]]:
    """The row of one file (`location`, `path`: sources.SourceFile) -> its DecodedRow, as a dict; for
    `Dataset.flat_map` (see genre.batch_predict.job), one row always."""
    return [_decoded(row, features)]


def _decoded(row: dict[str, Any], features: FeatureConfig) -> dict[str, Any]:
    try:
        decoded = decode_file(row["location"], features, _extractor(features))
    except Exception as error:  # one odd file must not stop the run: it is that file's error
        return asdict(DecodedRow(row["path"], b"", 0, f"failed to process: {type(error).__name__}: {error}"))
    if decoded.mels is None:
        return asdict(DecodedRow(row["path"], b"", 0, decoded.error))
    # Bytes, not a tensor column: files' window counts differ, and the actor knows their shape.
    mels = decoded.mels.numpy().tobytes()
    return asdict(DecodedRow(row["path"], mels, len(decoded.mels), note=decoded.note))
