"""A trial's data: what each worker reads of the prepared splits, held or streamed.

A worker holds its share of the train split in memory (on its GPU) when it fits, and shuffles it
whole every epoch: streaming from Ray Data costs on every batch (Arrow blocks to tensors, a local
shuffle buffer), more than one GPU needs to train the small CNNs (bench/README.md). A held split is
read by the worker itself, straight from the dataset's Parquet shards (the 70-clip sample's 8 MiB
in 0.1 s), where handing it over through Ray Data cost the sweep a materialisation of every split
before the first trial (2.7 s on 2 cores). A train share too big to hold is streamed every epoch by
Ray Data from the shard files that the epoch deals to the worker (`StreamedSplit`). The worker that
scores (rank 0) holds the val and test windows for the whole run, so an epoch's validation reads
nothing.

The trial's actor and Ray Train's controller import this module too: torch is imported only where a
worker reads (each of those processes would otherwise spend seconds importing it).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
import ray.train
import ray.util

from data_pipeline.manifest import read_manifest
from data_pipeline.shards import read_mels, read_split, shard_files
from genre.config import TrialConfig
from genre.storage import is_uri

if TYPE_CHECKING:
    import torch

    from genre.windows import Batch, Windows

TRAIN, VAL, TEST = "train", "val", "test"
# Bytes per float16 value on the wire and in memory; a label is an int64.
MEL_BYTES, LABEL_BYTES = 2, 8


def shard_mib(features: dict[str, Any], train_segments: int, world_size: int) -> float:
    """The size of one worker's share of the train split, from the manifest's counts and shapes."""
    per_segment = features["n_mels"] * features["frames"] * MEL_BYTES + LABEL_BYTES
    return train_segments * per_segment / world_size / 2**20


def held_in_memory(shard_size_mib: float, budget_mib: int) -> bool:
    """Whether a worker's share of this size is read once into memory rather than streamed."""
    return shard_size_mib <= budget_mib


def read_windows(
    data: str | Path, split: str, device: torch.device, with_tracks: bool = False, with_segments: bool = False
) -> Windows:
    """One split of the dataset in DATA, whole and in its shards' order, as tensors on `device`.

    DATA is a path or a URI: this process opens DATA's filesystem itself, from the text."""
    columns = [
        "mel",
        "label",
        *(["track_id"] if with_tracks else []),
        *(["segment"] if with_segments else []),
    ]
    try:
        table = read_split(data, split, columns=columns)
    except FileNotFoundError as error:
        if is_uri(str(data)):
            raise  # a shard gone from the bucket since the sweep's check: the message names it
        # A node the autoscaler added after the sweep's check of every node, without DATA's mount.
        raise FileNotFoundError(
            f"node {ray.util.get_node_ip_address()} cannot read {error.filename or data}: DATA must be on "
            "storage that every node mounts at the same path"
        ) from None
    return _as_windows(table, device)


def read_windows_by_shard(data: str | Path, split: str, device: torch.device) -> Iterator[Windows]:
    """One split of the dataset in DATA a shard file at a time, with each window's track: a split too
    big to hold, scored."""
    manifest = read_manifest(data)
    filesystem, files = shard_files(data, manifest, split)
    for path in files:
        yield _as_windows(
            pq.read_table(path, columns=["mel", "label", "track_id"], filesystem=filesystem), device
        )


def _as_windows(table: pa.Table, device: torch.device) -> Windows:
    """A table of `mel`, `label` and any of `track_id` and `segment`, as tensors on `device`."""
    import torch

    from genre.windows import Windows

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
        self, config: TrialConfig, device: torch.device, whole: Windows | None, data: str | Path
    ) -> None:
        self.config, self.device = config, device
        self.held: Windows | None = None
        self.whole: Windows | None = None  # with --random-offsets: every window, drawn from each epoch
        self.slots: torch.Tensor | None = None  # and its (track, slot) numbers
        self.streamed: StreamedSplit | None = None
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        if whole is None:
            self.streamed = StreamedSplit(data, config.data_view()[TRAIN], self.rank, self.world_size)
        elif config.random_offsets and config.train_offsets > 1:
            self.whole, self.slots = whole, whole.slots(config.train_offsets)
        else:
            self.held = whole.grid(config.train_offsets).rank_share(self.rank, self.world_size)

    def __call__(self, epoch: int) -> Iterator[Batch]:
        from genre.windows import epoch_order_seed

        seed, batch_size = self.config.seed, self.config.batch_size
        if self.whole is not None:
            # The same draw on every rank (the same seed), then each rank's share of it.
            drawn = self.whole.one_per_slot(self.slots, seed, epoch)
            share = drawn.rank_share(self.rank, self.world_size)
            return share.shuffled(batch_size, seed, epoch)
        if self.held is not None:
            return self.held.shuffled(batch_size, seed, epoch)
        assert self.streamed is not None
        return self.streamed.dataset(epoch_order_seed(seed, epoch)).iter_torch_batches(
            batch_size=batch_size,
            local_shuffle_buffer_size=self.config.shuffle_buffer,
            local_shuffle_seed=epoch_order_seed(seed, epoch),
            device=self.device,
        )


class StreamedSplit:
    """One worker's share of a train split too big to hold, read from DATA's shards by Ray Data anew
    every epoch: whole shard files, in an order of the epoch's seed, dealt among the workers.

    Dealt here rather than by Ray Train's split of one shared Ray Dataset: that split hands each
    epoch's blocks out in the same order, and Ray Data's own reseeded file shuffle counts executions
    in the process that runs them, so a restarted worker would not find its epoch's order again. The
    shards themselves hold a seeded mix of the split's tracks, their rows mixed too (`genre prepare`),
    so the stream is mixed before the shuffle buffer mixes it further.
    """

    def __init__(self, data: str | Path, groups: str, rank: int, world_size: int) -> None:
        manifest = read_manifest(data)
        self.filesystem, self.files = shard_files(data, manifest, groups)
        self.rows = [shard["rows"] for group in groups.split(",") for shard in manifest["shards"][group]]
        self.rank, self.world_size = rank, world_size

    def dataset(self, seed: int) -> ray.data.Dataset:
        """This worker's windows of the epoch whose order `seed` gives, as a Ray Dataset of mel, label."""
        shares, rows = deal_shards(self.rows, self.world_size, seed)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        # Rows in the files' dealt order: with the seeded shuffle buffer, the same seed gives the same
        # batches.
        context.execution_options.preserve_order = True
        files = [self.files[index] for index in shares[self.rank]]
        dataset = ray.data.read_parquet(files, columns=["mel", "label"], filesystem=self.filesystem)
        return dataset.limit(rows) if rows < sum(self.rows[index] for index in shares[self.rank]) else dataset


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
