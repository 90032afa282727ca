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
    # Each window's number in its track (the shards' `segment`), read where windows between the grid's
    # were kept (prepare --train-hop): segment = slot * offsets + j.
    segments: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def shuffled(self, batch_size: int, seed: int, epoch: int) -> Iterator[Batch]:
        """One epoch: a seeded permutation of all windows, the last batch smaller if need be."""
        generator = torch.Generator().manual_seed(epoch_order_seed(seed, epoch))
        order = torch.randperm(len(self), generator=generator).to(self.labels.device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield {"mel": self.mels[index], "label": self.labels[index]}

    def take(self, index: torch.Tensor) -> Windows:
        """The windows at `index` (a CPU tensor of row numbers), in that order."""
        rows = index.tolist()
        return Windows(
            self.mels[index.to(self.mels.device)],
            self.labels[index.to(self.labels.device)],
            tuple(self.track_ids[i] for i in rows) if self.track_ids else (),
            self.segments[index] if self.segments is not None else None,
        )

    def grid(self, offsets: int) -> Windows:
        """The windows on the grid (j = 0 of every slot): what a dataset without offsets holds."""
        if offsets <= 1 or self.segments is None:
            return self
        return self.take(torch.nonzero(self.segments % offsets == 0).flatten())

    def slots(self, offsets: int) -> torch.Tensor:
        """Each window's (track, slot) as a number 0..slots-1: what `one_per_slot` draws within
        (worked out once per trial, not every epoch)."""
        assert self.segments is not None and self.track_ids, "needs each window's track and segment"
        numbers = self.segments.tolist()
        keys = [(track, number // offsets) for track, number in zip(self.track_ids, numbers, strict=True)]
        index = {key: number for number, key in enumerate(dict.fromkeys(keys))}
        return torch.tensor([index[key] for key in keys])

    def one_per_slot(self, slots: torch.Tensor, seed: int, epoch: int) -> Windows:
        """One window of each (track, slot) (`slots()`), drawn for this epoch: random offsets within the
        track, the same draws for the same seed and epoch."""
        # A random score per window; each slot keeps its highest: a uniform draw among the slot's windows.
        generator = torch.Generator().manual_seed(epoch_order_seed(seed, epoch) + 7_919)
        score = torch.rand(len(slots), generator=generator)
        best = torch.full((int(slots.max()) + 1,), -1.0).scatter_reduce(0, slots, score, reduce="amax")
        return self.take(torch.nonzero(score == best[slots]).flatten())

    def rank_share(self, rank: int, world_size: int) -> Windows:
        """Every world_size-th window from `rank` on, the same count on every rank (DDP steps together)."""
        usable = len(self) // world_size * world_size
        take = slice(rank, usable, world_size)
        # contiguous(): a strided view would keep the whole split alive in memory.
        return Windows(self.mels[take].contiguous(), self.labels[take].contiguous())


def epoch_order_seed(seed: int, epoch: int) -> int:
    """A new order every epoch, the same orders for the same seed."""
    return seed * 100_003 + epoch
