"""FILE.parts/, the rows of an unfinished batch prediction as they come, what makes it resumable; runs in the
`genre` process.

The folder beside FILE holds `job.json` (the model and the hash of its checkpoint) and Parquet part files
of finished rows, each written whole (a hidden name, then a rename). A rerun of the same job reads which
paths are done and predicts the rest; a rerun with another checkpoint is refused, naming the folder to
delete. Once every file has its row, the parts become FILE and the folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from data_pipeline.errors import UserInputError
from data_pipeline.storage import redact
from genre.batch_predict.output import SCHEMA

if TYPE_CHECKING:
    from genre.train.checkpoints import CheckpointBytes

JOB_NAME = "job.json"
PART_GLOB = "part-*.parquet"
# Rows held before they are written as a part, and the longest they wait: what an interruption can
# cost, against a folder of many tiny files.
PART_ROWS = 256
PART_SECONDS = 10.0


@dataclass(frozen=True)
class JobRecord:
    """What the rows of FILE.parts/ were predicted with: a rerun must use the same, or start afresh."""

    model: str
    checkpoint: str
    checkpoint_sha256: str

    @classmethod
    def of(cls, model: str, checkpoint: CheckpointBytes) -> JobRecord:
        """The record of a job with this checkpoint (known by its bytes: a run trained again is another)."""
        return cls(model, redact(checkpoint.location), hashlib.sha256(checkpoint.data).hexdigest())


class PartsFolder:
    """FILE.parts/ of one output FILE."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.folder = out.with_name(f"{out.name}.parts")

    def open(self, job: JobRecord) -> set[str]:
        """The paths whose rows the folder holds already (none for a new folder); another job's is refused."""
        record = self.folder / JOB_NAME
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            _write_whole(record, json.dumps(asdict(job), indent=2).encode())
            return set()
        try:
            found = JobRecord(**json.loads(record.read_text()))
        except (OSError, ValueError, TypeError):
            raise UserInputError(
                f"{self.folder} is there but holds no readable {JOB_NAME}: not an unfinished `genre predict "
                "--out` of this FILE; move it away or delete it"
            ) from None
        if found.checkpoint_sha256 != job.checkpoint_sha256:
            raise UserInputError(
                f"{self.folder} holds an unfinished prediction by {found.model} ({found.checkpoint}); finish "
                f"it with the same --run and --model, or delete {self.folder} to start afresh with this model"
            )
        return set(self.read(columns=["path"])["path"].to_pylist())

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """Every row of the parts (SCHEMA), a path once (the first part's row where two hold it)."""
        parts = sorted(self.folder.glob(PART_GLOB))
        schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(name) for name in columns])
        if not parts:
            return schema.empty_table()
        table = pa.concat_tables(pq.read_table(part, columns=columns, schema=schema) for part in parts)
        first = {}
        for index, path in enumerate(table["path"].to_pylist()):
            first.setdefault(path, index)
        return table.take(sorted(first.values())) if len(first) < table.num_rows else table

    def write(self, table: pa.Table) -> None:
        """One part file of finished rows."""
        if table.num_rows:
            name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            _write_whole(self.folder / name, table)

    def remove(self) -> None:
        shutil.rmtree(self.folder)


class PartWriter:
    """Rows from the pipeline into part files, PART_ROWS at a time or every PART_SECONDS."""

    def __init__(self, parts: PartsFolder) -> None:
        self.parts = parts
        self.held: list[pa.Table] = []
        self.since = time.monotonic()

    def add(self, table: pa.Table) -> None:
        self.held.append(table)
        rows = sum(t.num_rows for t in self.held)
        if rows >= PART_ROWS or time.monotonic() - self.since >= PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write what is held (also on the way out of an interrupted run: those rows are finished)."""
        if self.held:
            self.parts.write(pa.concat_tables(self.held).cast(SCHEMA))
        self.held, self.since = [], time.monotonic()


def _write_whole(target: Path, content: bytes | pa.Table) -> None:
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    try:
        if isinstance(content, pa.Table):
            pq.write_table(content, partial)
        else:
            partial.write_bytes(content)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
