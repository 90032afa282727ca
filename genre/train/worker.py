"""What every Ray Train worker of a trial runs: genre.train.fit's loop, with Ray at its edges only.

Ray gives the worker its device, its data (genre.train.batches), its last checkpoint and where to report;
everything between is plain PyTorch. Reads top to bottom: build, restore, read, fit, then score
the best epoch's weights on train, val and test.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from data_pipeline.ray_connect import quiet_ray_data_logs
from genre import reports
from genre.config import TrialConfig
from genre.models import count_parameters, create_model, get_spec, resolve_weights
from genre.train.amp import grad_scaler, resolve_amp
from genre.train.augment import Augment, Augmenter
from genre.train.batches import TEST, TRAIN, VAL, TrainBatches, read_windows, read_windows_by_shard
from genre.train.checkpoints import save_best
from genre.train.faults import Fault
from genre.train.fit import (
    Report,
    Training,
    TrialState,
    Weights,
    checkpoint_payload,
    fit,
    restore_payload,
    score,
    score_parts,
    seed_everything,
)
from genre.train.recipe import make_optimizer, make_scheduler
from genre.train.setup import WorkerSetup

STATE_FILE = "state.pt"


def run_worker(setup: WorkerSetup) -> None:
    """Train one trial's model on this worker (entered through genre.trial.trainable.train_worker)."""
    quiet_ray_data_logs()
    config, folder, data, pinned = setup.trial, setup.folder, setup.data, setup.manifest_sha256
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config.torch_threads)
    seed_everything(config.seed + rank)
    if rank == 0:
        folder.count_attempt()

    device = ray.train.torch.get_device()
    spec = get_spec(config.model)
    amp = resolve_amp(config.amp, spec.amp, device)
    weights = resolve_weights(
        spec.pretrained_weights, config.pretrained, config.weights_dir, model=config.model
    )
    num_classes = len(setup.labels)
    model = create_model(config.model, num_classes=num_classes, dropout=config.dropout, weights=weights)
    params = count_parameters(model)
    model = ray.train.torch.prepare_model(model)
    optimizer = make_optimizer(model.parameters(), config.optimizer, config.lr, config.weight_decay)

    # Rank 0 scores: it holds the val and test windows, and scores the train split at the end.
    scores_here = rank == 0
    view = config.data_view()  # which of the dataset's shard groups each split reads
    held = (
        {
            split: read_windows(data, view[split], device, with_tracks=True, manifest_sha256=pinned)
            for split in (VAL, TEST)
        }
        if scores_here
        else {}
    )
    whole_train = (
        read_windows(
            data,
            view[TRAIN],
            device,
            # Drawing random offsets needs every window's track and slot, on every rank.
            with_tracks=scores_here or config.random_offsets,
            with_segments=config.train_offsets > 1,
            manifest_sha256=pinned,
        )
        if setup.train_held
        else None
    )
    batches = TrainBatches(config, device, whole_train, data, pinned)
    # Built once the batches are known: the schedule counts them.
    scheduler = make_scheduler(
        optimizer,
        config.lr_schedule,
        epochs=config.epochs,
        steps_per_epoch=batches.steps_per_epoch(),
        warmup_epochs=config.warmup_epochs,
    )
    training = Training(
        model,
        optimizer,
        grad_scaler(amp, device),
        device,
        amp,
        num_classes,
        world_size,
        rank=rank,
        scheduler=scheduler,
        grad_clip=config.grad_clip,
        label_smoothing=config.label_smoothing,
    )
    state, best_weights = restore(training)
    fault = Fault.parse(config.fault) if config.fault else None
    best_weights = fit(
        training,
        state,
        epochs=config.epochs,
        batches=fault.around_batches(batches, config.model) if fault else batches,
        validate=lambda model: score(model, held[VAL], "val", device, amp) if scores_here else {},
        report=fault.before(reporter(training, rank), config.model) if fault else reporter(training, rank),
        best_weights=best_weights,
        augmenter=_augmenter(config, num_classes, rank),
        seed=config.seed,
        patience=config.patience,
    )

    final: dict[str, Any] = {reports.FINAL: 1, reports.PARAMS: params, reports.AMP: amp}
    if state.stopped_early:
        final[reports.STOPPED_EARLY] = state.epoch
    if scores_here:
        training.plain_model.load_state_dict(best_weights)
        final[reports.CHECKPOINT] = save_best(
            folder.best_checkpoint,
            training.plain_model,
            config=config,
            features=setup.features,
            labels=setup.labels,
            epoch=state.best_epoch,
            metrics=state.best_metrics,
        )
        # Scored on the grid, as every dataset; a streamed split (never with offsets) a shard at a time.
        train_parts = (
            [whole_train.grid(config.train_offsets)]
            if whole_train is not None
            else read_windows_by_shard(data, view[TRAIN], device, pinned)
        )
        final.update(score_parts(training.plain_model, train_parts, TRAIN, device, amp))
        for split in (VAL, TEST):
            final.update(score(training.plain_model, held[split], split, device, amp))
        folder.write_history(state.history)
    ray.train.report(
        {
            **final,
            reports.PRETRAINED: weights.describe() if weights else "none",
            reports.EPOCH: state.epoch,  # the last epoch trained: before the last with a patience
            reports.BEST_EPOCH: max(state.best_epoch, 0),
            reports.TRAIN_TIME_S: state.train_seconds,
            reports.SAMPLES_PER_S: state.samples_per_s,
            reports.STARTED_AT: state.started_at,
            reports.FINISHED_AT: time.time(),
        }
    )


def reporter(training: Training, rank: int) -> Report:
    """Each epoch to Ray Train; rank 0 attaches everything a restarted worker needs to continue."""

    def report(metrics: dict[str, float], state: TrialState, best_weights: Weights) -> None:
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(checkpoint_payload(training, state, best_weights), Path(folder) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    return report


def restore(training: Training) -> tuple[TrialState, Weights | None]:
    """The trial's state and its best weights so far, from the last reported checkpoint (if any)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrialState(), None
    with checkpoint.as_directory() as folder:
        saved = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    return restore_payload(training, saved)


def _augmenter(config: TrialConfig, num_classes: int, rank: int) -> Augmenter | None:
    """The trial's training-batch augmentation, or None for the study's plain batches."""
    augment = Augment.from_dict(config.augment)
    return Augmenter(augment, num_classes, config.seed, rank=rank) if augment.active else None
