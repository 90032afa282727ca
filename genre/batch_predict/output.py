"""The output's rows and columns, and FILE written as Parquet or CSV; runs in the model actors (rows) and
the `genre` process (files)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from data_pipeline.errors import UserInputError

FORMATS = (".parquet", ".csv")
TOP_K = 3  # as genre.predict.TOP_K (not imported: the driver's writing needs no torch)

TOP_TYPE = pa.list_(pa.struct([("genre", pa.string()), ("probability", pa.float64())]))
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("genre", pa.string()),
        ("probability", pa.float64()),
        ("top", TOP_TYPE),
        ("segments", pa.int64()),
        ("model", pa.string()),
        ("error", pa.string()),
        ("note", pa.string()),
    ]
)


@dataclass(frozen=True)
class FileRow:
    """One file's line of the output: its top genres, or why it has none (`error`, empty when none)."""

    path: str
    model: str
    top: tuple[tuple[str, float], ...] = ()
    segments: int = 0
    error: str = ""
    note: str = ""


def rows_table(rows: Iterable[FileRow]) -> pa.Table:
    """The rows as a table of SCHEMA: `genre` and `probability` are the top one's, null for an error."""
    rows = list(rows)
    return pa.Table.from_pydict(
        {
            "path": [r.path for r in rows],
            "genre": [r.top[0][0] if r.top else None for r in rows],
            "probability": [r.top[0][1] if r.top else None for r in rows],
            "top": [[{"genre": g, "probability": p} for g, p in r.top] for r in rows],
            "segments": [r.segments for r in rows],
            "model": [r.model for r in rows],
            "error": [r.error for r in rows],
            "note": [r.note for r in rows],
        },
        schema=SCHEMA,
    )


def check_out(out: Path) -> None:
    """Refuse an --out that is not a local .parquet or .csv file."""
    if out.suffix.lower() not in FORMATS:
        raise UserInputError(f"--out {str(out)!r} must end with .parquet or .csv")
    if out.is_dir():
        raise UserInputError(f"--out {str(out)!r} is a folder; name a file (e.g. {out}/predictions.parquet)")


def write_output(table: pa.Table, out: Path) -> None:
    """FILE whole, as Parquet or CSV by its suffix: a reader sees the old file or the new one, never half."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}")
    try:
        if out.suffix.lower() == ".csv":
            pacsv.write_csv(flat_table(table), partial)
        else:
            pq.write_table(table, partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def flat_table(table: pa.Table) -> pa.Table:
    """The table with `top` as columns for CSV: genre_2, probability_2, genre_3, probability_3 after the
    top one's genre and probability (empty where a model has fewer genres, or for an error)."""
    columns = {name: table[name] for name in ("path", "genre", "probability")}
    top = table["top"]
    for rank in range(2, TOP_K + 1):
        has_rank = pc.greater_equal(pc.list_value_length(top), rank)
        long_enough = pc.if_else(has_rank, top, pa.scalar(None, TOP_TYPE))
        picked = pc.list_element(long_enough, rank - 1)
        columns[f"genre_{rank}"] = pc.struct_field(picked, "genre")
        columns[f"probability_{rank}"] = pc.struct_field(picked, "probability")
    for name in ("segments", "model", "error", "note"):
        columns[name] = table[name]
    return pa.table(columns)
