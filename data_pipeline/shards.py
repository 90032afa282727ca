"""The Parquet shard format: one row per segment, a float16 log-mel tensor per row."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Column order of every shard; `mel` is Arrow's canonical fixed-shape tensor [n_mels, frames].
COLUMNS = ("track_id", "segment", "label", "genre", "split", "mel")
MEL_DTYPE = np.float16
# Tracks per parallel task and Parquet file (~80 segments, ~3 MB): enough tasks to keep every core
# busy on small collections, few enough files to keep reading fast on large ones.
TRACKS_PER_SHARD = 8


def shard_name(index: int) -> str:
    """File name of the shard written by featurizing task `index`."""
    return f"part-{index:05d}.parquet"


def segments_table(
    track_ids: Sequence[str],
    segments: Sequence[int],
    labels: Sequence[int],
    genres: Sequence[str],
    splits: Sequence[str],
    mels: np.ndarray,
) -> pa.Table:
    """Build a shard table; `mels` is [rows, n_mels, frames] and is stored as float16."""
    mel_column = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(mels, dtype=MEL_DTYPE))
    return pa.table(
        {
            "track_id": pa.array(track_ids, pa.string()),
            "segment": pa.array(segments, pa.int32()),
            "label": pa.array(labels, pa.int64()),
            "genre": pa.array(genres, pa.string()),
            "split": pa.array(splits, pa.string()),
            "mel": mel_column,
        }
    )


def write_shard(table: pa.Table, path: str | Path) -> None:
    """Write one shard; a retried task overwrites its own file, so retries never duplicate rows."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Dictionary encoding and min/max statistics of the mel values cost 2.5x the write time and
    # help no reader: keep them for the small columns only.
    small = ["track_id", "segment", "label", "genre", "split"]
    pq.write_table(table, str(path), use_dictionary=["track_id", "genre", "split"], write_statistics=small)


def read_mels(table: pa.Table) -> np.ndarray:
    """The `mel` column of a shard table as a [rows, n_mels, frames] float16 array."""
    return table.column("mel").combine_chunks().to_numpy_ndarray()


def read_split(dataset: str | Path, split: str, columns: Sequence[str] | None = None) -> pa.Table:
    """All rows of one split of a prepared dataset, ordered by track and segment."""
    files = sorted((Path(dataset) / split).glob("*.parquet"))
    if not files:
        return pa.schema([]).empty_table()
    table = pa.concat_tables(pq.read_table(f, columns=list(columns) if columns else None) for f in files)
    if {"track_id", "segment"} <= set(table.column_names):
        table = table.sort_by([("track_id", "ascending"), ("segment", "ascending")])
    return table
