"""The Parquet shard format: one row per segment, a float16 log-mel tensor per row.

A dataset is a folder or an s3:// / gs:// prefix (genre.storage): shards are read and written
through its pyarrow filesystem, opened in each process from the location's text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from data_pipeline.errors import UserInputError
from data_pipeline.manifest import read_manifest
from genre.storage import Storage, first_line, open_storage, redact

# Column order of every shard; `mel` is Arrow's canonical fixed-shape tensor [n_mels, frames].
COLUMNS = ("track_id", "segment", "label", "genre", "split", "mel")
MEL_DTYPE = np.float16
# What a split read whole is ordered by.
ORDER_COLUMNS = ("track_id", "segment")
# The manifest's `shard_order`: each shard holds a seeded mix of its split's tracks, its rows mixed
# too (data_pipeline.prepare.shard_order), so that a split read shard by shard is mixed. Datasets
# without it have one genre per shard, and only a split held whole is shuffled well.
MIXED_SHARDS = "seeded mix of each split's tracks"
# Tracks per parallel task and Parquet file, when not given: about TASKS_PER_CPU tasks per CPU of the
# cluster, between MIN and MAX tracks. Each task has a fixed cost whatever its size (~5 ms of the
# driver's CPU; 1,000 x 30 s tracks on 2 cores: 16.8 s in shards of 8, 15.0 s in shards of 64), and
# several tasks per CPU keep every core busy to the end. A task holds its shard's log-mels until it
# writes them (~10 MB per audio minute at 128 bands), so long tracks make fewer per shard: at most
# MAX_SHARD_AUDIO_SECONDS of audio (64 thirty-second tracks), and at least one track.
MIN_TRACKS_PER_SHARD, MAX_TRACKS_PER_SHARD = 8, 64
TASKS_PER_CPU = 4
MAX_SHARD_AUDIO_SECONDS = 64 * 30.0
_PREPARE_AGAIN = "prepare the dataset again (genre prepare SRC DATA --overwrite)"
# Shard footers and files read at once: on an object store each is a request that mostly waits.
READ_THREADS = 16


def tracks_per_shard(tracks: int, cpus: float, mean_seconds: float = 30.0) -> int:
    """Tracks per featurizing task and Parquet file for `tracks` tracks of `mean_seconds` on average,
    on `cpus` CPUs."""
    wanted = math.ceil(tracks / (max(cpus, 1) * TASKS_PER_CPU))
    size = max(MIN_TRACKS_PER_SHARD, min(MAX_TRACKS_PER_SHARD, wanted))
    return max(1, min(size, math.floor(MAX_SHARD_AUDIO_SECONDS / max(mean_seconds, 1e-3))))


def shard_name(index: int, tag: str = "") -> str:
    """File name of the shard written by featurizing task `index` (of the run named `tag`, if any)."""
    return f"part-{index:05d}{f'-{tag}' if tag else ''}.parquet"


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


def write_shard(table: pa.Table, location: str | Path) -> None:
    """Write one shard; a retried task overwrites its own file, so retries never duplicate rows."""
    target = open_storage(location)
    if target.is_local:
        Path(target.path).parent.mkdir(parents=True, exist_ok=True)
    # Dictionary encoding and min/max statistics of the mel values cost 2.5x the write time and
    # help no reader: keep them for the small columns only.
    small = ["track_id", "segment", "label", "genre", "split"]
    pq.write_table(
        table,
        target.path,
        filesystem=target.filesystem,
        use_dictionary=["track_id", "genre", "split"],
        write_statistics=small,
    )


def written_shards(
    folder: str | Path, groups: Sequence[str], tag: str = ""
) -> dict[str, list[dict[str, Any]]]:
    """The manifest's `shards`: per group (split), its files in `folder` of the run named `tag` (all
    `.parquet` files when none), sorted, with their row counts from the footers."""
    place = open_storage(folder)
    ending = f"-{tag}.parquet" if tag else ".parquet"
    found = [path for path in place.files() if path.endswith(ending) and path.count("/") == 1]
    paths = {group: [path for path in found if path.startswith(f"{group}/")] for group in groups}
    listed = [path for group in groups for path in paths[group]]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        rows = dict(
            zip(listed, pool.map(lambda path: _footer(place.child(path)).num_rows, listed), strict=True)
        )
    return {group: [{"path": path, "rows": rows[path]} for path in paths[group]] for group in groups}


def check_shards(dataset: str | Path, manifest: dict[str, Any]) -> None:
    """Every shard the manifest lists is there, readable, and holds the rows the manifest says.

    Cheap (Parquet footers only, read a few at once), and before Ray starts: a damaged file is named
    in one line instead of failing a trial with a reader's traceback.
    """
    place = open_storage(dataset)
    listed = [(split, shard) for split, shards in manifest["shards"].items() for shard in shards]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        # map's results come in the manifest's order: the first bad shard listed is the one named.
        list(pool.map(lambda listing: _check_shard(place, *listing), listed))


def _check_shard(dataset: Storage, split: str, shard: dict[str, Any]) -> None:
    path = dataset.child(shard["path"])
    try:
        metadata = _footer(path)
    except FileNotFoundError:
        raise UserInputError(
            f"{path} is missing: the {split} split is incomplete; {_PREPARE_AGAIN}"
        ) from None
    except (OSError, pa.ArrowException) as error:
        reason = first_line(error)
        raise UserInputError(f"{path} is not a readable Parquet shard ({reason}); {_PREPARE_AGAIN}") from None
    missing = [c for c in COLUMNS if c not in metadata.schema.to_arrow_schema().names]
    if missing or metadata.num_rows != shard["rows"]:
        found = f"lacks {', '.join(missing)}" if missing else f"holds {metadata.num_rows} rows"
        raise UserInputError(
            f"{path} {found}, not the {shard['rows']} rows of columns {', '.join(COLUMNS)} that "
            f"the manifest lists; {_PREPARE_AGAIN}"
        )


def _footer(shard: Storage) -> pq.FileMetaData:
    return pq.read_metadata(shard.path, filesystem=shard.filesystem)


def shard_files(
    dataset: str | Path, manifest: dict[str, Any], split: str
) -> tuple[pafs.FileSystem, list[str]]:
    """The files of one split, as the manifest lists them (a stray file in the folder is not read):
    the dataset's filesystem, and their paths in it, as pyarrow and Ray Data read them.

    `split` may name several of the manifest's shard groups, comma-separated (a cross-validation
    trial's train folds: "fold-0,fold-3")."""
    place = open_storage(dataset)
    groups = split.split(",")
    unknown = [group for group in groups if group not in manifest["shards"]]
    if unknown:
        raise UserInputError(
            f"the dataset {redact(str(dataset))!r} has no {', '.join(unknown)} split; it has "
            f"{', '.join(manifest['shards'])}"
        )
    return place.filesystem, [place.child(s["path"]).path for g in groups for s in manifest["shards"][g]]


def read_mels(table: pa.Table) -> np.ndarray:
    """The `mel` column of a shard table as a [rows, n_mels, frames] float16 array."""
    return table.column("mel").combine_chunks().to_numpy_ndarray()


def read_split(dataset: str | Path, split: str, columns: Sequence[str] | None = None) -> pa.Table:
    """All rows of one split of a prepared dataset, ordered by track and segment.

    The files are the manifest's, as the sweep reads them: a stray file in the folder is not read.
    """
    filesystem, files = shard_files(dataset, read_manifest(dataset), split)
    if not files:
        return pa.schema([]).empty_table()

    # The shards' rows are in a seeded mix (data_pipeline.prepare.shard_order): sorted here, by the two
    # small columns read even when not asked for.
    wanted = list(columns) if columns else None
    read_columns = None if wanted is None else list(dict.fromkeys([*wanted, *ORDER_COLUMNS]))

    def read(path: str) -> pa.Table:
        return pq.read_table(path, columns=read_columns, filesystem=filesystem)

    with ThreadPoolExecutor(min(READ_THREADS, len(files))) as pool:
        table = pa.concat_tables(pool.map(read, files))  # in the manifest's order
    table = table.sort_by([(column, "ascending") for column in ORDER_COLUMNS])
    return table if wanted is None else table.select(wanted)
