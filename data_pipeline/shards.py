"""The Parquet shard format: one row per segment, a float16 log-mel tensor per row.

A dataset is a folder or an s3:// / gs:// prefix (data_pipeline.storage): shards are read and written
through its pyarrow filesystem, opened in each process from the location's text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from data_pipeline.errors import UserInputError
from data_pipeline.manifest import check_manifest_unchanged, read_manifest, shard_path
from data_pipeline.storage import Storage, first_line, open_storage, redact

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
# float16's exponent bits: all set in an infinity or a NaN, and only there.
_FLOAT16_EXPONENT = 0x7C00
# float16 values checked per step: a buffer of this size, rather than one the size of the shard.
_CHECK_BLOCK = 1 << 20


class BrokenShard(UserInputError):
    """A shard whose rows are not what its dataset's manifest says they are."""


@dataclass(frozen=True)
class ShardContents:
    """What every row of a dataset's shards holds, as its manifest says: a float16 log-mel of
    [n_mels, frames], finite, and a label of 0 to classes - 1."""

    n_mels: int
    frames: int
    classes: int

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> ShardContents:
        features = manifest["features"]
        return cls(int(features["n_mels"]), int(features["frames"]), len(manifest["labels"]))

    def check_schema(self, schema: pa.Schema, shard: str) -> None:
        """The columns' types (a footer's, or a table's): integer labels, float16 mels of the manifest's
        shape."""
        if "label" in schema.names and not pa.types.is_integer(schema.field("label").type):
            raise BrokenShard(
                f"{shard} holds labels of type {schema.field('label').type}, not integers; {_PREPARE_AGAIN}"
            )
        if "mel" not in schema.names:
            return
        kind = schema.field("mel").type
        if not isinstance(kind, pa.FixedShapeTensorType) or kind.value_type != pa.float16():
            raise BrokenShard(
                f"{shard} holds mels of type {kind}, not the float16 tensors genre writes; {_PREPARE_AGAIN}"
            )
        if list(kind.shape) != [self.n_mels, self.frames]:
            found = "x".join(map(str, kind.shape))
            expected = f"{self.n_mels}x{self.frames}"
            raise BrokenShard(
                f"{shard} holds {found} mels, not the {expected} of the manifest's features; {_PREPARE_AGAIN}"
            )

    def check_labels(self, low: int, high: int, shard: str) -> None:
        if low < 0 or high >= self.classes:
            raise BrokenShard(
                f"{shard} holds labels {low} to {high}, outside the manifest's {self.classes} genres "
                f"(0 to {self.classes - 1}); {_PREPARE_AGAIN}"
            )

    def check(self, table: pa.Table, shard: str) -> None:
        """A shard's rows as read: every mel of the right shape and finite, every label a genre's.

        Vectorised, once per file read: a few milliseconds for a shard of 64 tracks."""
        self.check_schema(table.schema, shard)
        names = table.column_names
        if "mel" in names:
            column = table.column("mel")
            if column.null_count:
                raise BrokenShard(f"{shard} holds {column.null_count} rows without a mel; {_PREPARE_AGAIN}")
            if not all(_finite(chunk.storage.flatten()) for chunk in column.chunks):
                raise BrokenShard(
                    f"{shard} holds mel values that are not finite (NaN or infinity); {_PREPARE_AGAIN}"
                )
        if "label" in names and table.num_rows:
            labels = table.column("label")
            if labels.null_count:
                raise BrokenShard(f"{shard} holds {labels.null_count} rows without a label; {_PREPARE_AGAIN}")
            bounds = pc.min_max(labels)
            self.check_labels(bounds["min"].as_py(), bounds["max"].as_py(), shard)


def _finite(values: pa.Array) -> bool:
    """Whether every float16 value is finite: no value has all its exponent bits set."""
    bits = values.to_numpy(zero_copy_only=False).view(np.uint16)  # a null read as NaN: not finite
    block = np.empty(min(len(bits), _CHECK_BLOCK), np.uint16)
    for start in range(0, len(bits), _CHECK_BLOCK):
        part = bits[start : start + _CHECK_BLOCK]
        masked = np.bitwise_and(part, _FLOAT16_EXPONENT, out=block[: len(part)])
        if (masked == _FLOAT16_EXPONENT).any():
            return False
    return True


def read_shard(shard: Storage, contents: ShardContents, columns: Sequence[str] | None = None) -> pa.Table:
    """One shard file (`columns` of it, or all), its rows checked against the manifest (`contents`)."""
    table = pq.read_table(shard.path, columns=columns, filesystem=shard.filesystem)
    contents.check(table, str(shard))
    return table


@contextmanager
def pinned_reads(dataset: str | Path | Storage, manifest_sha256: str | None) -> Iterator[None]:
    """Reads of shard files that must come from the dataset whose manifest hashed to `manifest_sha256`
    when the run started (None: any): checked after they succeed, and, when they fail, the failure of a
    dataset prepared again meanwhile (its shards gone or rewritten) said as that.

    A dataset is replaced whole, its manifest with it: the same manifest after a read means the files
    read were its own."""
    if not manifest_sha256:
        yield
        return
    try:
        yield
    except (OSError, pa.ArrowException, BrokenShard):
        check_manifest_unchanged(dataset, manifest_sha256)
        raise
    check_manifest_unchanged(dataset, manifest_sha256)


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


def write_shard(table: pa.Table, location: str | Path | Storage) -> None:
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


def check_shards(dataset: str | Path | Storage, manifest: dict[str, Any]) -> None:
    """Every shard the manifest lists is inside the dataset, there, readable, and holds the rows, the
    mel shape and the labels the manifest says.

    Cheap (Parquet footers only, read a few at once), and before Ray starts: a damaged file is named
    in one line instead of failing a trial with a reader's traceback. Values are checked as they are
    read (`read_shard`): only reading them all finds a NaN.
    """
    place = open_storage(dataset)
    listed = [(split, shard) for split, shards in manifest["shards"].items() for shard in shards]
    contents = ShardContents.of(manifest)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        # map's results come in the manifest's order: the first bad shard listed is the one named.
        list(pool.map(lambda listing: _check_shard(place, *listing, contents), listed))


def _check_shard(dataset: Storage, split: str, shard: dict[str, Any], contents: ShardContents) -> None:
    path = dataset.child(shard_path(shard["path"], dataset))
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
    contents.check_schema(metadata.schema.to_arrow_schema(), str(path))
    labels = _label_range(metadata)
    if labels is not None:
        contents.check_labels(*labels, str(path))


def _label_range(metadata: pq.FileMetaData) -> tuple[int, int] | None:
    """The smallest and largest label, from the footer's statistics (genre writes them); None without."""
    paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    column = paths.index("label")
    low, high = None, None
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(column).statistics
        if statistics is None or not statistics.has_min_max:
            return None
        low = statistics.min if low is None else min(low, statistics.min)
        high = statistics.max if high is None else max(high, statistics.max)
    return None if low is None else (int(low), int(high))


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
    return place.filesystem, [shard.path for shard in shard_locations(place, manifest, split)]


def shard_locations(dataset: str | Path | Storage, manifest: dict[str, Any], split: str) -> list[Storage]:
    """The files of one split (or of several groups, comma-separated) as the manifest lists them, each
    refused unless it is inside the dataset (`shard_path`)."""
    place = open_storage(dataset)
    groups = split.split(",")
    unknown = [group for group in groups if group not in manifest["shards"]]
    if unknown:
        raise UserInputError(
            f"the dataset {redact(str(dataset))!r} has no {', '.join(unknown)} split; it has "
            f"{', '.join(manifest['shards'])}"
        )
    listed = [shard["path"] for group in groups for shard in manifest["shards"][group]]
    return [place.child(shard_path(path, place)) for path in listed]


def read_mels(table: pa.Table) -> np.ndarray:
    """The `mel` column of a shard table as a [rows, n_mels, frames] float16 array."""
    return table.column("mel").combine_chunks().to_numpy_ndarray()


def read_split(
    dataset: str | Path | Storage,
    split: str,
    columns: Sequence[str] | None = None,
    manifest_sha256: str | None = None,
) -> pa.Table:
    """All rows of one split of a prepared dataset, ordered by track and segment, checked against the
    manifest (`read_shard`); with `manifest_sha256`, refused unless the dataset is still the one a run
    started with (`pinned_reads`).

    The files are the manifest's, as the sweep reads them: a stray file in the folder is not read.
    """
    manifest = read_manifest(dataset, manifest_sha256)
    shards = shard_locations(dataset, manifest, split)
    if not shards:
        return pa.schema([]).empty_table()
    contents = ShardContents.of(manifest)

    # The shards' rows are in a seeded mix (data_pipeline.prepare.shard_order): sorted here, by the two
    # small columns read even when not asked for.
    wanted = list(columns) if columns else None
    read_columns = None if wanted is None else list(dict.fromkeys([*wanted, *ORDER_COLUMNS]))

    def read(shard: Storage) -> pa.Table:
        return read_shard(shard, contents, read_columns)

    with pinned_reads(dataset, manifest_sha256), ThreadPoolExecutor(min(READ_THREADS, len(shards))) as pool:
        table = pa.concat_tables(pool.map(read, shards))  # in the manifest's order
    table = table.sort_by([(column, "ascending") for column in ORDER_COLUMNS])
    return table if wanted is None else table.select(wanted)
