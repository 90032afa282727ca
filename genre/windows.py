"""Log-mel windows held in memory, and the order an epoch visits them in. Only torch: a trial's
actor imports this (through genre.datasets) and must start quickly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

Batch = dict[str, torch.Tensor]  # "mel": [B, n_mels, frames] float16; "label": [B] int64


@dataclass(frozen=True)
class Windows:
    """Log-mel windows and their labels held in memory (on the device), with their tracks if scored."""

    mels: torch.Tensor  # [N, n_mels, frames] float16
    labels: torch.Tensor  # [N] int64
    track_ids: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def shuffled(self, batch_size: int, seed: int, epoch: int) -> Iterator[Batch]:
        """One epoch: a seeded permutation of all windows, the last batch smaller if need be."""
        generator = torch.Generator().manual_seed(epoch_order_seed(seed, epoch))
        order = torch.randperm(len(self), generator=generator).to(self.labels.device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield {"mel": self.mels[index], "label": self.labels[index]}

    def rank_share(self, rank: int, world_size: int) -> Windows:
        """Every world_size-th window from `rank` on, the same count on every rank (DDP steps together)."""
        usable = len(self) // world_size * world_size
        take = slice(rank, usable, world_size)
        # contiguous(): a strided view would keep the whole split alive in memory.
        return Windows(self.mels[take].contiguous(), self.labels[take].contiguous())


def epoch_order_seed(seed: int, epoch: int) -> int:
    """A new order every epoch, the same orders for the same seed."""
    return seed * 100_003 + epoch
