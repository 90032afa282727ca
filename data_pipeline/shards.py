"""The Parquet shard format: one row per segment, a float16 log-mel tensor per row."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_pipeline.errors import UserInputError
from data_pipeline.manifest import read_manifest

# Column order of every shard; `mel` is Arrow's canonical fixed-shape tensor [n_mels, frames].
COLUMNS = ("track_id", "segment", "label", "genre", "split", "mel")
MEL_DTYPE = np.float16
# Tracks per parallel task and Parquet file (~80 segments, ~3 MB): enough tasks to keep every core
# busy on small collections, few enough files to keep reading fast on large ones.
TRACKS_PER_SHARD = 8
_PREPARE_AGAIN = "prepare the dataset again (genre prepare SRC DATA --overwrite)"


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


def check_shards(dataset: str | Path, manifest: dict[str, Any]) -> None:
    """Every shard the manifest lists is there, readable, and holds the rows the manifest says.

    Cheap (Parquet footers only), and before Ray starts: a damaged file is named in one line instead
    of failing a trial with a reader's traceback.
    """
    for split, shards in manifest["shards"].items():
        for shard in shards:
            path = Path(dataset) / shard["path"]
            try:
                metadata = pq.read_metadata(path)
            except FileNotFoundError:
                raise UserInputError(
                    f"{path} is missing: the {split} split is incomplete; {_PREPARE_AGAIN}"
                ) from None
            except (OSError, pa.ArrowException) as error:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise UserInputError(
                    f"{path} is not a readable Parquet shard ({reason}); {_PREPARE_AGAIN}"
                ) from None
            missing = [c for c in COLUMNS if c not in metadata.schema.to_arrow_schema().names]
            if missing or metadata.num_rows != shard["rows"]:
                found = f"lacks {', '.join(missing)}" if missing else f"holds {metadata.num_rows} rows"
                raise UserInputError(
                    f"{path} {found}, not the {shard['rows']} rows of columns {', '.join(COLUMNS)} that "
                    f"the manifest lists; {_PREPARE_AGAIN}"
                )


def shard_paths(dataset: str | Path, manifest: dict[str, Any], split: str) -> list[str]:
    """The files of one split, as the manifest lists them (a stray file in the folder is not read)."""
    return [str(Path(dataset) / shard["path"]) for shard in manifest["shards"][split]]


def read_mels(table: pa.Table) -> np.ndarray:
    """The `mel` column of a shard table as a [rows, n_mels, frames] float16 array."""
    return table.column("mel").combine_chunks().to_numpy_ndarray()


def read_split(dataset: str | Path, split: str, columns: Sequence[str] | None = None) -> pa.Table:
    """All rows of one split of a prepared dataset, ordered by track and segment.

    The files are the manifest's, as the sweep reads them: a stray file in the folder is not read.
    """
    files = shard_paths(dataset, read_manifest(dataset), split)
    if not files:
        return pa.schema([]).empty_table()
    table = pa.concat_tables(pq.read_table(f, columns=list(columns) if columns else None) for f in files)
    if {"track_id", "segment"} <= set(table.column_names):
        table = table.sort_by([("track_id", "ascending"), ("segment", "ascending")])
    return table
