"""A trial's datasets: the splits as Ray Datasets (driver), and what each worker reads of them.

The driver reads the shards once into Ray's object store for every trial and epoch. A worker holds
its share of the train split in memory (on its GPU) when it fits, and shuffles it whole every epoch:
streaming from Ray Data costs on every batch (Arrow blocks to tensors, a local shuffle buffer), more
than one GPU needs to train the small CNNs (bench/README.md). A larger share streams every epoch,
split across the workers by Ray Data. The worker that scores (rank 0) holds the val and test windows
for the whole run, so an epoch's validation reads nothing.

The trial's actor and Ray Train's controller import this module too: torch is imported only where a
worker reads (each of those processes would otherwise spend seconds importing it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray.data
import ray.train

from data_pipeline.manifest import read_manifest
from data_pipeline.shards import shard_paths
from genre.config import TrialConfig

if TYPE_CHECKING:
    import torch

    from genre.windows import Batch, Windows

# The datasets a trial hands its workers: the whole train, val and test splits, and, when the train
# split streams, a copy of it for Ray Data to split across the workers.
TRAIN, TRAIN_EVAL, VAL, TEST = "train", "train_eval", "val", "test"
SCORED_SPLITS = {TRAIN_EVAL: "train", VAL: "val", TEST: "test"}
# Bytes per float16 value on the wire and in memory; a label is an int64.
MEL_BYTES, LABEL_BYTES = 2, 8
READ_BATCH = 1024


def shard_mib(features: dict[str, Any], train_segments: int, world_size: int) -> float:
    """The size of one worker's share of the train split, from the manifest's counts and shapes."""
    per_segment = features["n_mels"] * features["frames"] * MEL_BYTES + LABEL_BYTES
    return train_segments * per_segment / world_size / 2**20


def held_in_memory(shard_size_mib: float, budget_mib: int) -> bool:
    """Whether a worker's share of this size is read once into memory rather than streamed."""
    return shard_size_mib <= budget_mib


def open_datasets(data: str | Path) -> dict[str, ray.data.Dataset]:
    """The train, val and test splits as Ray Datasets, read once and held in Ray's object store.

    The float16 log-mels of a GTZAN-sized dataset are ~350 MB: one read serves all epochs of all
    trials (Ray spills to disk what memory cannot hold).
    """
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Batches in file order: with the seeded shuffle, the same seed gives the same metrics.
    context.execution_options.preserve_order = True
    manifest = read_manifest(data)
    columns = ["mel", "label", "track_id"]
    return {
        name: ray.data.read_parquet(shard_paths(data, manifest, split), columns=columns).materialize()
        for name, split in SCORED_SPLITS.items()
    }


def trial_datasets(
    datasets: dict[str, ray.data.Dataset], held: bool
) -> tuple[dict[str, ray.data.Dataset], ray.train.DataConfig]:
    """What a trial's trainer gets: every split whole, for each worker to read; and when the train
    split streams, a copy of it that Ray Data splits across the workers (a held one is read whole
    and each worker keeps its share: no split coordinator)."""
    if held:
        return dict(datasets), ray.train.DataConfig(datasets_to_split=[])
    streamed = datasets[TRAIN_EVAL].select_columns(["mel", "label"])
    return {TRAIN: streamed, **datasets}, ray.train.DataConfig(datasets_to_split=[TRAIN])


def read_windows(name: str, device: torch.device, with_tracks: bool = False) -> Windows:
    """This worker's copy of dataset `name`, whole and in file order, as tensors on `device`."""
    import torch

    from genre.windows import Windows

    mels, labels, tracks = [], [], []
    dataset = ray.train.get_dataset_shard(name)
    for batch in dataset.iter_batches(batch_size=READ_BATCH, batch_format="numpy"):
        mels.append(torch.tensor(batch["mel"]))  # a copy: arrays from Arrow are read-only
        labels.append(torch.from_numpy(batch["label"]).long())
        if with_tracks:
            tracks.extend(str(track) for track in batch["track_id"])
    if not mels:
        empty = torch.empty(0, device=device)
        return Windows(empty.half(), empty.long())
    return Windows(torch.cat(mels).to(device), torch.cat(labels).to(device), tuple(tracks))


class TrainBatches:
    """Every epoch's batches for one worker: its share of the held train split shuffled whole, or,
    when `whole` is None, its split of the streamed one."""

    def __init__(self, config: TrialConfig, device: torch.device, whole: Windows | None) -> None:
        self.config, self.device = config, device
        self.held: Windows | None = None
        if whole is not None:
            context = ray.train.get_context()
            self.held = whole.rank_share(context.get_world_rank(), context.get_world_size())

    def __call__(self, epoch: int) -> Iterator[Batch]:
        from genre.windows import epoch_order_seed

        if self.held is not None:
            return self.held.shuffled(self.config.batch_size, self.config.seed, epoch)
        return ray.train.get_dataset_shard(TRAIN).iter_torch_batches(
            batch_size=self.config.batch_size,
            local_shuffle_buffer_size=self.config.shuffle_buffer,
            local_shuffle_seed=epoch_order_seed(self.config.seed, epoch),
            device=self.device,
        )
