"""The training loop, in plain PyTorch: no Ray, no files.

`fit` trains epoch after epoch from a `TrialState` (fresh, or restored from a checkpoint), scores
each epoch with the `validate` it is given, keeps the best epoch's weights and hands every epoch to
`report`, until its last epoch or, with a patience, until that many epochs bring no better one. The
caller decides where batches come from and where reports and checkpoints go: under Ray Train that is
genre.train.worker; in the tests, plain tensors and lists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import distributed, nn
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from genre import reports
from genre.config import BEST_BY
from genre.train.amp import autocast
from genre.train.augment import Augmenter
from genre.train.forward import as_model_input, segment_probabilities, window_batch
from genre.train.metrics import split_metrics
from genre.train.windows import Batch, Windows

Scores = dict[str, float]
Weights = dict[str, torch.Tensor]


@dataclass
class TrialState:
    """Where a trial's training stands; plain values, so a checkpoint of it loads `weights_only`."""

    epoch: int = -1  # the last finished epoch
    best_epoch: int = -1
    best_val: float = -1.0
    best_metrics: Scores = field(default_factory=dict)
    train_seconds: float = 0.0
    samples: int = 0  # trained on by all workers together
    started_at: float = field(default_factory=time.time)
    # Every finished epoch's metrics: carried through restarts, so each epoch is reported once.
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False  # patience ran out after `epoch`, before the last epoch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialState:
        return cls(**values)

    @property
    def samples_per_s(self) -> float:
        return self.samples / max(self.train_seconds, 1e-9)


@dataclass
class Training:
    """A model with what steps it: the optimizer, its per-batch rate schedule, the loss scaler, the
    gradient clipping, the device and the autocast mode; and the label smoothing of its loss."""

    model: nn.Module  # as stepped: wrapped for data parallelism when there are several workers
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: str
    num_classes: int
    world_size: int = 1
    rank: int = 0  # this worker's: its dropout and other global draws are its own
    scheduler: LRScheduler | None = None  # stepped after every batch (genre.train.recipe)
    grad_clip: float | None = None  # the gradients' largest total norm
    label_smoothing: float = 0.0

    @property
    def plain_model(self) -> nn.Module:
        """The model without its data-parallel wrapper: what checkpoints and scoring use."""
        return getattr(self.model, "module", self.model)

    def state_dict(self) -> dict[str, Any]:
        # The schedule's own state, not rebuilt from the epoch: its step count is the batches trained,
        # which only a streamed split's epochs know, and OneCycleLR keeps its phases there.
        return {
            "model": self.plain_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            **({"scheduler": self.scheduler.state_dict()} if self.scheduler is not None else {}),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.plain_model.load_state_dict(saved["model"])
        # The optimizer after the schedule was built over it: its saved rate replaces the one the
        # schedule set for batch 0.
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        if self.scheduler is not None:
            if "scheduler" not in saved:
                raise ValueError("the checkpoint holds no learning-rate schedule, but this trial has one")
            self.scheduler.load_state_dict(saved["scheduler"])


Validate = Callable[[nn.Module], Scores]
Report = Callable[[dict[str, float], TrialState, Weights], None]
# Why a trial whose loss stops being a number ends: its weights are lost from there on.
NON_FINITE_LOSS_HINT = "look for non-finite values in DATA, or lower the learning rate (--lr)"


def checkpoint_payload(training: Training, state: TrialState, best_weights: Weights) -> dict[str, Any]:
    """What a restarted worker needs to continue after `state`'s epoch: tensors and plain values only.

    The best epoch's weights travel too, unless this epoch is the best (then they are "model").
    """
    return {
        **training.state_dict(),
        "state": state.to_dict(),
        "best_model": None if state.best_epoch == state.epoch else best_weights,
    }


def restore_payload(training: Training, saved: dict[str, Any]) -> tuple[TrialState, Weights]:
    """Load a `checkpoint_payload` into `training`; the trial's state and its best weights so far."""
    training.load_state_dict(saved)
    best = saved["best_model"] if saved["best_model"] is not None else saved["model"]
    return TrialState.from_dict(saved["state"]), best


def fit(
    training: Training,
    state: TrialState,
    *,
    epochs: int,
    batches: Callable[[int], Iterable[Batch]],
    validate: Validate,
    report: Report,
    best_weights: Weights | None = None,
    augmenter: Augmenter | None = None,
    seed: int | None = None,
    patience: int = 0,
) -> Weights:
    """Train from `state` up to `epochs`; return the best epoch's weights (on the CPU).

    `batches(epoch)` gives one epoch's batches; `validate(model)` scores it (an empty dict on
    workers that do not score); `report(metrics, state, best_weights)` is called after every epoch,
    with `state` already advanced: a checkpoint taken there resumes at the next epoch. `augmenter`
    (genre.train.augment) changes the training batches only; validation and scoring never see it.
    With a `seed`, each epoch's global draws (dropout) come from (seed, rank, epoch) alone, so a run
    resumed at any epoch repeats the uninterrupted run exactly; None leaves the generators alone.
    With a `patience`, training ends (`state.stopped_early`) once that many epochs since the best
    one brought no better one; rank 0, which scores, decides for every rank.
    """
    for epoch in range(state.epoch + 1, epochs):
        # Asked before the epoch rather than after the last: a state restored from an epoch's
        # checkpoint stops here too.
        if patience and _out_of_patience(training, state, patience):
            state.stopped_early = True
            break
        started = time.perf_counter()
        if seed is not None:
            # Reseeded rather than carried in the checkpoint: what an epoch draws then depends on
            # nothing a restart loses, on every rank (only rank 0 writes the checkpoint).
            seed_everything(epoch_seed(seed, training.rank, epoch))
        trained, samples = train_epoch(training, batches(epoch), augmenter, epoch)
        metrics = {reports.EPOCH: epoch, **trained}
        state.train_seconds += metrics[reports.TRAIN_S]
        state.samples += samples
        validating = time.perf_counter()
        scores = validate(training.plain_model)
        metrics[reports.VALIDATE_S] = time.perf_counter() - validating
        metrics.update(scores)
        if BEST_BY in scores and scores[BEST_BY] > state.best_val:
            state.best_val, state.best_epoch = scores[BEST_BY], epoch
            state.best_metrics = dict(metrics)
            best_weights = cpu_copy(training.plain_model.state_dict())
        metrics[reports.BEST_EPOCH] = state.best_epoch if state.best_epoch >= 0 else epoch
        metrics[reports.EPOCH_TIME_S] = time.perf_counter() - started
        state.history.append(dict(metrics))
        state.epoch = epoch
        reporting = time.perf_counter()
        report(metrics, state, best_weights if best_weights is not None else {})
        # What the report and its checkpoint cost, in the trial's own record (history.parquet).
        state.history[-1][reports.REPORT_S] = time.perf_counter() - reporting
    if best_weights is None:  # nothing scored (a worker that does not validate): the last weights
        best_weights = cpu_copy(training.plain_model.state_dict())
    return best_weights


def _out_of_patience(training: Training, state: TrialState, patience: int) -> bool:
    """Whether `patience` epochs have passed since the best one, as rank 0 (the one that scores) sees it."""
    out = state.best_epoch >= 0 and state.epoch - state.best_epoch >= patience
    if training.world_size > 1 and distributed.is_available() and distributed.is_initialized():
        # Every rank stops with rank 0, or the others would wait for ever in their next all-reduce.
        verdict = torch.tensor([int(out)], device=training.device)
        distributed.broadcast(verdict, src=0)
        out = bool(verdict.item())
    return out


def train_epoch(
    training: Training, batches: Iterable[Batch], augmenter: Augmenter | None = None, epoch: int = 0
) -> tuple[dict[str, float], int]:
    """One pass over `batches`: its report (loss and running accuracy over all workers, seconds) and
    the samples all workers saw.

    With an `augmenter`, each batch is augmented first (seeded by the epoch and the batch's index);
    with mixup its targets are probabilities, and the running accuracy is against each window's own label.
    Label smoothing mixes any targets, mixup's included, with the uniform distribution (cross_entropy).
    A loss that is not a finite number raises FloatingPointError before it reaches the weights.
    """
    model, device = training.model, training.device
    # "disable": the loop refuses a non-finite loss itself; torchmetrics' default drops it with a warning.
    loss_mean = MeanMetric(nan_strategy="disable").to(device)
    running_accuracy = MulticlassAccuracy(num_classes=training.num_classes, average="micro").to(device)
    started = time.perf_counter()
    seen = 0
    model.train()
    for index, batch in enumerate(batches):
        mel, labels = batch["mel"], batch["label"].to(device).long()
        targets: torch.Tensor = labels
        if augmenter is not None:
            mel, targets = augmenter(torch.as_tensor(mel, device=device), labels, epoch=epoch, batch=index)
        inputs = as_model_input(mel, device)
        with autocast(training.amp, device):
            logits = model(inputs)
            # On float32 logits: the study applied softmax before a cross-entropy that applies it again.
            loss = nn.functional.cross_entropy(
                logits.float(), targets, label_smoothing=training.label_smoothing
            )
        # One sync per step, as torchmetrics' own NaN check made before: a step on a NaN loss would
        # make every weight NaN, and the trial would go on to "complete" with them.
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss.item()} at epoch {epoch}, batch {index}: "
                + NON_FINITE_LOSS_HINT
            )
        training.optimizer.zero_grad(set_to_none=True)
        training.scaler.scale(loss).backward()
        if training.grad_clip is not None:
            # The true gradients' norm: unscaled first when fp16's scaler multiplied the loss.
            training.scaler.unscale_(training.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip)
        scale = training.scaler.get_scale() if training.scaler.is_enabled() else None
        training.scaler.step(training.optimizer)
        training.scaler.update()
        # An fp16 step whose gradients overflowed is skipped by the scaler (and its scale lowered): the
        # schedule waits for a step that trained, as torch asks (it warns otherwise).
        stepped = scale is None or training.scaler.get_scale() >= scale
        if training.scheduler is not None and stepped:
            training.scheduler.step()
        loss_mean.update(loss.detach(), weight=len(labels))
        running_accuracy.update(logits.detach().argmax(dim=1), labels)
        seen += len(labels)
    # compute() all-reduces across data-parallel workers: these cover the whole training set.
    trained = {
        reports.TRAIN_LOSS: float(loss_mean.compute()) if seen else float("nan"),
        reports.TRAIN_RUNNING_ACCURACY: float(running_accuracy.compute()) if seen else float("nan"),
        reports.TRAIN_S: time.perf_counter() - started,
    }
    return trained, seen * training.world_size


def score(model: nn.Module, windows: Windows, split: str, device: torch.device, amp: str) -> Scores:
    """`{split}_{segment,track}_{accuracy,precision,recall}` of `model` on held windows, in eval mode."""
    return score_parts(model, [windows], split, device, amp)


def score_parts(
    model: nn.Module, parts: Iterable[Windows], split: str, device: torch.device, amp: str
) -> Scores:
    """The same over windows that arrive part by part (a split too big to hold, a shard at a time):
    only their probabilities are kept, and a track's windows may come in any part."""
    probabilities, labels, tracks = [], [], []
    for windows in parts:
        if len(windows) == 0:
            continue
        batches = torch.split(windows.mels, window_batch(device))
        probabilities.append(segment_probabilities(model, batches, device, amp))
        labels.append(windows.labels.cpu())
        tracks.extend(windows.track_ids)
    if not probabilities:
        return {}
    return split_metrics(split, torch.cat(probabilities), torch.cat(labels), tracks)


def cpu_copy(weights: Weights) -> Weights:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights.items()}


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's generators: initial weights, dropout and anything else random."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The global generators' seed for one rank's epoch: apart for every (seed, rank, epoch)."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{epoch}/global".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**63
