"""The per-worker training loop: plain PyTorch, with Ray only for the data shard, report, checkpoint.

Reads top to bottom: set up, restore, then per epoch train -> validate -> keep the best -> report;
at the end the best epoch's weights are scored on train, val and test.
"""

from __future__ import annotations

import copy
import json
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from data_pipeline.ray_connect import quiet_ray_data_logs
from genre.amp import autocast, grad_scaler, resolve_amp
from genre.checkpoints import save_best
from genre.config import TrainConfig
from genre.faults import AFTER_VALIDATION, Fault
from genre.inference import as_model_input, segment_probabilities
from genre.metrics import split_metrics
from genre.models import count_parameters, create_model, get_spec, resolve_weights
from genre.storage import Storage, open_storage
from genre.train_batches import TrainBatches, shard_mib

# Ray Data splits only the training set across workers; evaluation sets reach every worker whole,
# and rank 0 alone scores them, so metrics never depend on the number of workers.
from genre.trial import TEST, TRAIN, TRAIN_EVAL, VAL

STATE_FILE = "state.pt"
# In each trial's checkpoint folder: how many times its training loop has started.
ATTEMPTS_FILE = "attempts"
EVAL_BATCH = 256


def run_worker(loop_config: dict[str, Any]) -> None:
    """What every Ray Train worker of a trial runs (entered through genre.trial.train_worker)."""
    quiet_ray_data_logs()
    config = TrainConfig.from_dict(loop_config["train"])
    features, labels = loop_config["features"], loop_config["labels"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.set_num_threads(config.torch_threads)
    _seed_everything(config.seed + rank)
    if rank == 0:
        _count_attempt(config.checkpoint_dir)
    fault = Fault.parse(config.fault) if config.fault else None

    device = ray.train.torch.get_device()
    spec = get_spec(config.model)
    amp = resolve_amp(config.amp, spec.amp, device)
    weights = resolve_weights(
        spec.pretrained_weights, config.pretrained, config.weights_dir, model=config.model
    )
    dropout = spec.dropout if config.dropout is None else config.dropout
    model = create_model(config.model, num_classes=len(labels), dropout=dropout, weights=weights)
    params = count_parameters(model)
    model = ray.train.torch.prepare_model(model)
    plain_model = model.module if hasattr(model, "module") else model
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr or spec.lr)
    scaler = grad_scaler(amp, device)

    state, best_weights = _restore(plain_model, optimizer, scaler)
    train_shard_mib = shard_mib(features, loop_config["train_segments"], context.get_world_size())
    batches = TrainBatches(config, device, train_shard_mib)
    started_at = state.get("started_at", time.time())
    loss_mean = MeanMetric().to(device)
    running_accuracy = MulticlassAccuracy(num_classes=len(labels), average="micro").to(device)

    for epoch in range(state.get("epoch", -1) + 1, config.epochs):
        epoch_started = time.perf_counter()
        model.train()
        seen = 0
        for step, batch in enumerate(batches.epoch(epoch)):
            if fault:
                fault.trigger_at(epoch, step, config.model)
            inputs, targets = as_model_input(batch["mel"], device), batch["label"].long()
            with autocast(amp, device):
                logits = model(inputs)
                loss = nn.functional.cross_entropy(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_mean.update(loss.detach(), weight=len(targets))
            running_accuracy.update(logits.detach().argmax(dim=1), targets)
            seen += len(targets)
        train_seconds = time.perf_counter() - epoch_started
        # compute() all-reduces across workers, so these cover the whole training set.
        metrics = {
            "epoch": epoch,
            "train_loss": float(loss_mean.compute()),
            "train_running_accuracy": float(running_accuracy.compute()),
        }
        loss_mean.reset()
        running_accuracy.reset()
        state["train_seconds"] = state.get("train_seconds", 0.0) + train_seconds
        state["samples"] = state.get("samples", 0) + seen * context.get_world_size()
        if rank == 0:
            metrics.update(_evaluate(plain_model, VAL, device, amp))
            if metrics["val_segment_accuracy"] > state.get("best_val", -1.0):
                state["best_val"], state["best_epoch"] = metrics["val_segment_accuracy"], epoch
                state["best_metrics"] = dict(metrics)
                # Kept with the epoch's checkpoint, never written ahead of it: after a restart the
                # best epoch, its weights and the history all come from the restored timeline.
                best_weights = _cpu_copy(plain_model.state_dict())
        if fault:
            fault.trigger_at(epoch, AFTER_VALIDATION, config.model)
        metrics["best_epoch"] = state.get("best_epoch", epoch)
        metrics["epoch_time_s"] = time.perf_counter() - epoch_started
        # Carried in the checkpoints: a trial restarted after a kill still reports every epoch once.
        state["history"] = [*state.get("history", []), dict(metrics)]
        state["epoch"], state["started_at"] = epoch, started_at
        _report_with_state(metrics, plain_model, optimizer, scaler, state, best_weights, rank)

    final = {
        "final": 1,
        "params": params,
        "amp": amp,
        "pretrained": weights.describe() if weights else "none",
    }
    checkpoint = ""
    if rank == 0:
        plain_model.load_state_dict(best_weights)
        checkpoint = save_best(
            config.checkpoint_dir,
            plain_model,
            config=config,
            features=features,
            labels=labels,
            epoch=state["best_epoch"],
            metrics=state["best_metrics"],
        )
        for split in (TRAIN_EVAL, VAL, TEST):
            scores = _evaluate(plain_model, split, device, amp)
            final.update({key.replace(TRAIN_EVAL, TRAIN, 1): value for key, value in scores.items()})
    final.update(
        lr=config.lr or spec.lr,
        batch_size=config.batch_size,
        dropout=dropout,
        epoch=config.epochs - 1,
        best_epoch=state.get("best_epoch", 0),
        train_time_s=state.get("train_seconds", 0.0),
        samples_per_s=state.get("samples", 0) / max(state.get("train_seconds", 0.0), 1e-9),
        started_at=started_at,
        finished_at=time.time(),
        checkpoint=checkpoint,
        history=json.dumps(state.get("history", [])),
    )
    ray.train.report(final)


def _evaluate(model: nn.Module, split: str, device: torch.device, amp: str) -> dict[str, float]:
    labels: list[np.ndarray] = []
    track_ids: list[np.ndarray] = []

    def mels() -> Iterator[np.ndarray]:
        for batch in ray.train.get_dataset_shard(split).iter_batches(
            batch_size=EVAL_BATCH, batch_format="numpy"
        ):
            labels.append(batch["label"])
            track_ids.append(batch["track_id"])
            yield batch["mel"]

    probabilities = segment_probabilities(model, mels(), device, amp)
    if not labels:
        return {}
    return split_metrics(
        split, probabilities, torch.from_numpy(np.concatenate(labels)), np.concatenate(track_ids).tolist()
    )


def _report_with_state(
    metrics: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: dict[str, Any],
    best_weights: dict[str, torch.Tensor] | None,
    rank: int,
) -> None:
    """Report the epoch; rank 0 attaches everything a restarted worker needs to continue.

    The best epoch's weights travel too, unless this epoch is the best (then they are "model").
    """
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "state": copy.deepcopy(state),
                "best_model": None if state.get("best_epoch") == state["epoch"] else best_weights,
            },
            Path(folder) / STATE_FILE,
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _restore(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """The trial's state and its best weights so far, from the last reported checkpoint (if any)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {}, None
    with checkpoint.as_directory() as folder:
        saved = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scaler.load_state_dict(saved["scaler"])
    if "best_model" not in saved:
        # Written by a genre that kept the best weights beside the checkpoint, not in it.
        raise RuntimeError(
            "this trial's checkpoint predates genre's best-epoch format: start the sweep again"
        )
    best = saved["best_model"] if saved["best_model"] is not None else saved["model"]
    return dict(saved["state"]), best


def _cpu_copy(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights.items()}


def attempts(checkpoint_dir: str) -> int:
    """How many times a trial's training loop has started (1 + its restarts); 0 if never."""
    return _attempts_in(open_storage(checkpoint_dir).child(ATTEMPTS_FILE))


def _attempts_in(record: Storage) -> int:
    return int(record.read_bytes()) if record.exists() else 0


def _count_attempt(checkpoint_dir: str) -> None:
    # Rank 0 only, once per start: a restart after a failure or a resumed sweep adds one.
    record = open_storage(checkpoint_dir).child(ATTEMPTS_FILE)
    record.write_bytes(b"%d" % (_attempts_in(record) + 1))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
