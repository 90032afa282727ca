"""A worker's training batches: its shard of the train split, held on its device when it fits.

Streaming from Ray Data costs on every batch (Arrow blocks to tensors, a local shuffle buffer):
about 4,700 samples/s on one CPU core (bench/input_pipeline.py), below what one H100 trains the
small CNNs at (bench/gpu_plan.py). A shard within the memory budget is read once, as float16, into
tensors on the worker's device (GPU memory on a GPU); each epoch is then a seeded permutation of
it: a shuffle of the whole shard, and no conversion per batch. Larger shards stream every epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ray.train
import torch

from genre.config import TrainConfig
from genre.trial import TRAIN

# The train split's name among a trial's Ray Datasets.
Batch = dict[str, torch.Tensor]
# Bytes per float16 value on the wire and in memory; a label is an int64.
MEL_BYTES, LABEL_BYTES = 2, 8
READ_BATCH = 1024


def shard_mib(features: dict[str, Any], train_segments: int, world_size: int) -> float:
    """The size of one worker's share of the train split, from the manifest's counts and shapes."""
    per_segment = features["n_mels"] * features["frames"] * MEL_BYTES + LABEL_BYTES
    return train_segments * per_segment / world_size / 2**20


def held_in_memory(shard_size_mib: float, config: TrainConfig) -> bool:
    """Whether a worker's share of this size is read once into memory rather than streamed."""
    return shard_size_mib <= config.train_in_memory_mib


def epoch_order_seed(seed: int, epoch: int) -> int:
    """A new order every epoch, the same orders for the same seed."""
    return seed * 100_003 + epoch


@dataclass(frozen=True)
class HeldShard:
    """A worker's train shard as two tensors on its device."""

    mels: torch.Tensor  # [N, n_mels, frames] float16
    labels: torch.Tensor  # [N] int64

    @classmethod
    def read(cls, device: torch.device) -> HeldShard:
        mels, labels = [], []
        for batch in ray.train.get_dataset_shard(TRAIN).iter_torch_batches(
            batch_size=READ_BATCH, device=device
        ):
            mels.append(batch["mel"])
            labels.append(batch["label"].long())
        if not mels:  # fewer training segments than workers: no batches, as a streamed shard
            empty = torch.empty(0, device=device)
            return cls(empty.half(), empty.long())
        return cls(torch.cat(mels), torch.cat(labels))

    def batches(self, batch_size: int, seed: int, epoch: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(epoch_order_seed(seed, epoch))
        order = torch.randperm(len(self.labels), generator=generator).to(self.labels.device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield {"mel": self.mels[index], "label": self.labels[index]}


def streamed_batches(config: TrainConfig, epoch: int, device: torch.device) -> Iterator[Batch]:
    """The shard read from Ray Data's object store again, through a local shuffle buffer."""
    return ray.train.get_dataset_shard(TRAIN).iter_torch_batches(
        batch_size=config.batch_size,
        local_shuffle_buffer_size=config.shuffle_buffer,
        local_shuffle_seed=epoch_order_seed(config.seed, epoch),
        device=device,
    )


class TrainBatches:
    """Every epoch's batches for one worker, from memory or streamed, as the budget decides."""

    def __init__(self, config: TrainConfig, device: torch.device, shard_size_mib: float) -> None:
        self.config, self.device = config, device
        self.held = HeldShard.read(device) if held_in_memory(shard_size_mib, config) else None

    def epoch(self, epoch: int) -> Iterator[Batch]:
        if self.held is not None:
            return self.held.batches(self.config.batch_size, self.config.seed, epoch)
        return streamed_batches(self.config, epoch, self.device)
