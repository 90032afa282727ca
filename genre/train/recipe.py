"""The training recipe's optimizer and learning-rate schedule, built from a trial's settings; plain
PyTorch, no Ray (genre.train.fit steps them)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

# OneCycleLR's own share of the run spent rising, where --warmup-epochs leaves it to the schedule.
ONECYCLE_RISE = 0.3


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter], name: str, lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """`adam` (with weight decay as an L2 term, as torch's Adam has it) or `adamw` (decoupled)."""
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
) -> LRScheduler | None:
    """The per-batch schedule of `optimizer`'s rate: None for a constant rate without warm-up (the
    study's: nothing steps it)."""
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    if schedule == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        # OneCycleLR's rise ends at batch rise * total - 1 and divides by that: a warm-up of one batch
        # (one-batch epochs) would divide by 0, so it ends half-way to the second batch.
        rise = (warmup if warmup != 1 else 1.5) / total if warmup else ONECYCLE_RISE
        return OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(total, 1), pct_start=rise)
    if schedule == "constant" and not warmup:
        return None
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    return LambdaLR(optimizer, lr_factor(schedule, total, warmup))


def lr_factor(schedule: str, total: int, warmup: int) -> Callable[[int], float]:
    """The rate at batch `step` (0 first) as a share of the set one: (step + 1) / warmup through the
    warm-up, then 1 (constant) or a half cosine from 1 towards 0 at `total` (cosine)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        done = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * done))

    return factor
