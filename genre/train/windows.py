"""Log-mel windows held in memory, and the order an epoch visits them in. Only torch, no Ray: the
Ray-free loop (genre.train.fit) and its tests read batches from here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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


def buffered_batches(
    chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], batch_size: int, buffer_rows: int, seed: int
) -> Iterator[Batch]:
    """Batches of rows that arrive in chunks of (mels, labels), mixed through a seeded shuffle buffer
    of `buffer_rows` rows: each arriving row takes the slot of a random row of the buffer, which goes
    on to a batch; at the end the buffer goes out in a random order. Every row once, the last batch
    smaller if need be; the same chunks and seed give the same batches.

    tf.data's shuffle buffer, a chunk at a time (a chunk's rows take distinct slots). Written here
    because Ray Data's local shuffle buffer needs a Ray Dataset, whose reads are Ray tasks
    (genre.train.batches.StreamedSplit says why a worker reads its share itself).
    """
    generator = torch.Generator().manual_seed(seed)
    pool_mels: torch.Tensor | None = None
    pool_labels = torch.empty(0, dtype=torch.long)
    queue: list[tuple[torch.Tensor, torch.Tensor]] = []  # rows out of the buffer, not yet batched
    for mels, labels in chunks:
        room = buffer_rows - len(pool_labels)
        if room > 0:  # still filling the buffer
            pool_mels = mels[:room] if pool_mels is None else torch.cat([pool_mels, mels[:room]])
            pool_labels = torch.cat([pool_labels, labels[:room]])
            mels, labels = mels[room:], labels[room:]
        while len(labels):
            step = min(len(labels), buffer_rows)
            slots = torch.randperm(buffer_rows, generator=generator)[:step]
            queue.append((pool_mels[slots], pool_labels[slots]))  # indexing copies
            pool_mels[slots], pool_labels[slots] = mels[:step], labels[:step]
            mels, labels = mels[step:], labels[step:]
            yield from _full_batches(queue, batch_size)
    if pool_mels is not None:
        order = torch.randperm(len(pool_labels), generator=generator)
        queue.append((pool_mels[order], pool_labels[order]))
    yield from _full_batches(queue, batch_size, last=True)


def _full_batches(
    queue: list[tuple[torch.Tensor, torch.Tensor]], batch_size: int, last: bool = False
) -> Iterator[Batch]:
    """The queued rows as whole batches (and, if `last`, a smaller one), leaving the rest queued."""
    if not queue:
        return
    mels, labels = torch.cat([m for m, _ in queue]), torch.cat([lab for _, lab in queue])
    queue.clear()
    whole = len(labels) // batch_size * batch_size
    for start in range(0, whole, batch_size):
        yield {"mel": mels[start : start + batch_size], "label": labels[start : start + batch_size]}
    if whole < len(labels):
        if last:
            yield {"mel": mels[whole:], "label": labels[whole:]}
        else:
            queue.append((mels[whole:], labels[whole:]))


def epoch_order_seed(seed: int, epoch: int) -> int:
    """A new order every epoch, the same orders for the same seed."""
    return seed * 100_003 + epoch
