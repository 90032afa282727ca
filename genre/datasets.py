"""A trial's data: what each worker reads of the prepared splits, and the Ray Dataset of a streamed one.

A worker holds its share of the train split in memory (on its GPU) when it fits, and shuffles it
whole every epoch: streaming from Ray Data costs on every batch (Arrow blocks to tensors, a local
shuffle buffer), more than one GPU needs to train the small CNNs (bench/README.md). A held split is
read by the worker itself, straight from the dataset's Parquet shards (the 70-clip sample's 8 MiB
in 0.1 s), where handing it over through Ray Data cost the sweep a materialisation of every split
before the first trial (2.7 s on 2 cores). A train share too big to hold streams every epoch from
a Ray Dataset that the driver reads once and Ray Data splits across the workers. The worker that
scores (rank 0) holds the val and test windows for the whole run, so an epoch's validation reads
nothing.

The trial's actor and Ray Train's controller import this module too: torch is imported only where a
worker reads (each of those processes would otherwise spend seconds importing it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
# The splits a trial's best epoch is scored on, in the results table's order.
SCORED_SPLITS = (TRAIN, VAL, TEST)
# The Ray Dataset a streamed train split reaches the workers as.
STREAMED_TRAIN = "train"
# Bytes per float16 value on the wire and in memory; a label is an int64.
MEL_BYTES, LABEL_BYTES = 2, 8


def shard_mib(features: dict[str, Any], train_segments: int, world_size: int) -> float:
    """The size of one worker's share of the train split, from the manifest's counts and shapes."""
    per_segment = features["n_mels"] * features["frames"] * MEL_BYTES + LABEL_BYTES
    return train_segments * per_segment / world_size / 2**20


def held_in_memory(shard_size_mib: float, budget_mib: int) -> bool:
    """Whether a worker's share of this size is read once into memory rather than streamed."""
    return shard_size_mib <= budget_mib


def open_datasets(data: str | Path, train_held: bool) -> dict[str, ray.data.Dataset]:
    """The Ray Datasets a sweep's trials share: none when every worker holds the train split;
    else the train split, read once into Ray's object store for every trial and epoch (Ray spills
    to disk what memory cannot hold)."""
    if train_held:
        return {}
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Batches in file order: with the seeded shuffle buffer, the same seed gives the same metrics.
    context.execution_options.preserve_order = True
    # DATA's filesystem (an S3 or GCS one for a URI) goes with the read tasks, as Ray Data's own does.
    filesystem, files = shard_files(data, read_manifest(data), TRAIN)
    train = ray.data.read_parquet(files, columns=["mel", "label"], filesystem=filesystem)
    return {STREAMED_TRAIN: train.materialize()}


def trial_datasets(
    datasets: dict[str, ray.data.Dataset],
) -> tuple[dict[str, ray.data.Dataset], ray.train.DataConfig]:
    """What a trial's trainer gets: the streamed train split, for Ray Data to split across the
    workers, or nothing (the workers read held splits themselves)."""
    return dict(datasets), ray.train.DataConfig(datasets_to_split=list(datasets))


def read_windows(
    data: str | Path, split: str, device: torch.device, with_tracks: bool = False, with_segments: bool = False
) -> Windows:
    """One split of the dataset in DATA, whole and in its shards' order, as tensors on `device`.

    DATA is a path or a URI: this process opens DATA's filesystem itself, from the text."""
    import torch

    from genre.windows import Windows

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
    if table.num_rows == 0:
        empty = torch.empty(0, device=device)
        return Windows(empty.half(), empty.long())
    # Copies: arrays from Arrow are read-only.
    mels = torch.tensor(read_mels(table)).to(device)
    labels = torch.tensor(table.column("label").to_numpy()).long().to(device)
    tracks = tuple(table.column("track_id").to_pylist()) if with_tracks else ()
    segments = torch.tensor(table.column("segment").to_numpy()).long() if with_segments else None
    return Windows(mels, labels, tracks, segments)


class TrainBatches:
    """Every epoch's batches for one worker: its share of the held train split shuffled whole, or,
    when `whole` is None, its split of the streamed one."""

    def __init__(self, config: TrialConfig, device: torch.device, whole: Windows | None) -> None:
        self.config, self.device = config, device
        self.held: Windows | None = None
        self.whole: Windows | None = None  # with --random-offsets: every window, drawn from each epoch
        self.slots: torch.Tensor | None = None  # and its (track, slot) numbers
        if whole is not None:
            context = ray.train.get_context()
            self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
            if config.random_offsets and config.train_offsets > 1:
                self.whole, self.slots = whole, whole.slots(config.train_offsets)
            else:
                self.held = whole.grid(config.train_offsets).rank_share(self.rank, self.world_size)

    def __call__(self, epoch: int) -> Iterator[Batch]:
        from genre.windows import epoch_order_seed

        if self.whole is not None:
            # The same draw on every rank (the same seed), then each rank's share of it.
            drawn = self.whole.one_per_slot(self.slots, self.config.seed, epoch)
            share = drawn.rank_share(self.rank, self.world_size)
            return share.shuffled(self.config.batch_size, self.config.seed, epoch)
        if self.held is not None:
            return self.held.shuffled(self.config.batch_size, self.config.seed, epoch)
        return ray.train.get_dataset_shard(STREAMED_TRAIN).iter_torch_batches(
            batch_size=self.config.batch_size,
            local_shuffle_buffer_size=self.config.shuffle_buffer,
            local_shuffle_seed=epoch_order_seed(self.config.seed, epoch),
            device=self.device,
        )
