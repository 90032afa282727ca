"""A trial's data: what each worker reads of the prepared splits, held or streamed.

A worker holds its share of the train split in memory (on its GPU) when it fits, and shuffles it
whole every epoch: streaming costs on every batch (Arrow to tensors, a shuffle buffer), more than one
GPU needs to train small CNNs (bench/results/input_pipeline.md). A held split is read by the worker itself,
straight from the dataset's Parquet shards (the 70-clip sample's 8 MiB in 0.1 s), where handing it
over through Ray Data cost the sweep a materialisation of every split before the first trial (2.7 s
on 2 cores). A train share too big to hold is streamed every epoch from the shard files that the
epoch deals to the worker (`StreamedSplit`). The worker that scores (rank 0) holds the val and test
windows for the whole run, so an epoch's validation reads nothing, and scores a streamed train split
a shard at a time.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import ray.train
import ray.util
import torch

from data_pipeline.manifest import read_manifest
from data_pipeline.shards import (
    ShardContents,
    pinned_reads,
    read_mels,
    read_shard,
    read_split,
    shard_locations,
)
from data_pipeline.storage import Storage, is_uri
from genre.config import TrialConfig
from genre.train.windows import Batch, Windows, buffered_batches, epoch_order_seed

TRAIN, VAL, TEST = "train", "val", "test"


def read_windows(
    data: str | Path | Storage,
    split: str,
    device: torch.device,
    with_tracks: bool = False,
    with_segments: bool = False,
    manifest_sha256: str | None = None,
) -> Windows:
    """One split of the dataset in DATA, whole and sorted by track and segment, as tensors on `device`;
    its shards checked against the manifest, and with `manifest_sha256` (the sweep's, from its start)
    refused unless DATA is still that dataset (data_pipeline.shards.read_split)."""
    columns = [
        "mel",
        "label",
        *(["track_id"] if with_tracks else []),
        *(["segment"] if with_segments else []),
    ]
    try:
        table = read_split(data, split, columns=columns, manifest_sha256=manifest_sha256)
    except FileNotFoundError as error:
        if is_uri(str(data)):
            raise  # a shard gone from the bucket since the sweep's check: the message names it
        # A node the autoscaler added after the sweep's check of every node, without DATA's mount.
        raise FileNotFoundError(
            f"node {ray.util.get_node_ip_address()} cannot read {error.filename or data}: DATA must be on "
            "storage that every node mounts at the same path"
        ) from None
    return _as_windows(table, device)


def read_windows_by_shard(
    data: str | Path | Storage, split: str, device: torch.device, manifest_sha256: str | None = None
) -> Iterator[Windows]:
    """One split of the dataset in DATA a shard file at a time, with each window's track: a split too
    big to hold, scored. Checked as `read_windows` checks."""
    manifest = read_manifest(data, manifest_sha256)
    contents = ShardContents.of(manifest)
    for shard in shard_locations(data, manifest, split):
        with pinned_reads(data, manifest_sha256):
            table = read_shard(shard, contents, ["mel", "label", "track_id"])
        yield _as_windows(table, device)


def _as_windows(table: pa.Table, device: torch.device) -> Windows:
    """A table of `mel`, `label` and any of `track_id` and `segment`, as tensors on `device`."""

    if table.num_rows == 0:
        empty = torch.empty(0, device=device)
        return Windows(empty.half(), empty.long())
    # Copies: arrays from Arrow are read-only.
    mels = torch.tensor(read_mels(table)).to(device)
    labels = torch.tensor(table.column("label").to_numpy()).long().to(device)
    names = table.column_names
    tracks = tuple(table.column("track_id").to_pylist()) if "track_id" in names else ()
    segments = torch.tensor(table.column("segment").to_numpy()).long() if "segment" in names else None
    return Windows(mels, labels, tracks, segments)


class TrainBatches:
    """Every epoch's batches for one worker: its share of the held train split shuffled whole, or,
    when `whole` is None, its share of the split streamed from DATA's shards."""

    def __init__(
        self,
        config: TrialConfig,
        device: torch.device,
        whole: Windows | None,
        data: str | Path | Storage,
        manifest_sha256: str | None = None,
    ) -> None:
        self.config, self.device = config, device
        self.held: Windows | None = None
        self.whole: Windows | None = None  # with --random-offsets: every window, drawn from each epoch
        self.slots: torch.Tensor | None = None  # and its (track, slot) numbers
        self.streamed: StreamedSplit | None = None
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        if whole is None:
            train = config.data_view()[TRAIN]
            self.streamed = StreamedSplit(data, train, self.rank, self.world_size, manifest_sha256)
        elif config.random_offsets and config.train_offsets > 1:
            self.whole, self.slots = whole, whole.slots(config.train_offsets)
        else:
            self.held = whole.grid(config.train_offsets).rank_share(self.rank, self.world_size)

    def steps_per_epoch(self) -> int:
        """The batches of an epoch, what a learning-rate schedule counts on: exact for a held split;
        for a streamed one an upper bound, as each epoch deals its files anew (`deal_shards`)."""
        if self.whole is not None:
            rows = (int(self.slots.max()) + 1 if len(self.slots) else 0) // self.world_size
        elif self.held is not None:
            rows = len(self.held)
        else:
            assert self.streamed is not None
            rows = sum(self.streamed.rows) // self.world_size
        return -(-rows // self.config.batch_size)

    def __call__(self, epoch: int) -> Iterator[Batch]:

        seed, batch_size = self.config.seed, self.config.batch_size
        if self.whole is not None:
            # The same draw on every rank (the same seed), then each rank's share of it.
            drawn = self.whole.one_per_slot(self.slots, seed, epoch)
            share = drawn.rank_share(self.rank, self.world_size)
            return share.shuffled(batch_size, seed, epoch)
        if self.held is not None:
            return self.held.shuffled(batch_size, seed, epoch)
        assert self.streamed is not None
        return self.streamed.batches(
            epoch_order_seed(seed, epoch), batch_size, self.config.shuffle_buffer, self.device
        )


class StreamedSplit:
    """One worker's share of a train split too big to hold, read from DATA's shards anew every epoch:
    whole shard files, in an order of the epoch's seed, dealt among the workers, through a seeded
    shuffle buffer. The shards hold a seeded mix of the split's tracks, their rows mixed too (`genre
    prepare`), so the stream is mixed before the buffer mixes it further.

    The worker reads its files itself, one ahead in a thread, rather than through Ray Data. Ray Train's
    split of one shared Ray Dataset hands each epoch's blocks out in the same order; Ray Data's own
    reseeded file shuffle counts executions in the process that runs them, so a restarted worker would
    not find its epoch's order again; and a Ray Dataset read from a worker every epoch runs listing and
    read tasks that each need a whole free CPU on some node, which a sweep's plan need not leave on a
    cluster packed with trials: the reads would wait for ever.
    """

    def __init__(
        self,
        data: str | Path | Storage,
        groups: str,
        rank: int,
        world_size: int,
        manifest_sha256: str | None = None,
    ) -> None:
        # Every file read is checked (read_shard), and with the sweep's manifest hash, every file read
        # is DATA's as the sweep started: a worker restarted after DATA was prepared again stops here.
        manifest = read_manifest(data, manifest_sha256)
        self.data, self.manifest_sha256 = data, manifest_sha256
        self.contents = ShardContents.of(manifest)
        self.shards = shard_locations(data, manifest, groups)
        self.rows = [shard["rows"] for group in groups.split(",") for shard in manifest["shards"][group]]
        self.rank, self.world_size = rank, world_size

    def batches(self, seed: int, batch_size: int, buffer_rows: int, device: torch.device) -> Iterator[Batch]:
        """This worker's batches of the epoch whose order `seed` gives, on `device`."""

        shares, rows = deal_shards(self.rows, self.world_size, seed)
        files = [self.shards[index] for index in shares[self.rank]]
        chunks = self._chunks(files, rows, seed)
        for batch in buffered_batches(chunks, batch_size, max(buffer_rows, 1), seed):
            yield {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}

    def _chunks(
        self, files: list[Storage], rows: int, seed: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first `rows` rows of `files`, file by file, as (mels, labels) on the CPU, each file's rows
        in an order of `seed`; the next file read while this one is consumed (pyarrow reads and decodes
        without the GIL).

        A file is held whole anyway, so its rows are shuffled whole every epoch: a file's rows in the
        same order every epoch, mixed only by the buffer, trained measurably worse than a held split
        (bench/results/input_pipeline.md, `bench/held_vs_streamed.py`)."""

        generator = torch.Generator().manual_seed(seed)

        def read(shard: Storage) -> pa.Table:
            with pinned_reads(self.data, self.manifest_sha256):
                return read_shard(shard, self.contents, ["mel", "label"])

        left = rows
        with ThreadPoolExecutor(1) as reader:
            pending = [reader.submit(read, path) for path in files[:1]]
            for index in range(len(files)):
                table = pending.pop().result()
                if index + 1 < len(files) and left > table.num_rows:
                    pending.append(reader.submit(read, files[index + 1]))
                table = table.slice(0, left)
                left -= table.num_rows
                order = torch.randperm(table.num_rows, generator=generator).numpy()
                # Indexing copies: arrays from Arrow are read-only, and the buffer writes into what it holds.
                mels, labels = read_mels(table)[order], table.column("label").to_numpy()[order]
                yield torch.from_numpy(mels), torch.from_numpy(labels).long()
                if left == 0:
                    return


def deal_shards(rows: Sequence[int], world_size: int, seed: int) -> tuple[list[list[int]], int]:
    """Each worker's shard files (indices into `rows`, each file's row count) for one epoch, in an
    order of `seed`, dealt so that the workers' row counts stay close; and the rows every worker reads:
    the smallest share's, as DDP's workers must take the same number of steps."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    shares: list[list[int]] = [[] for _ in range(world_size)]
    totals = [0] * world_size
    for index in order:
        fewest = min(range(world_size), key=lambda rank: (totals[rank], rank))
        shares[fewest].append(index)
        totals[fewest] += rows[index]
    return shares, min(totals)
