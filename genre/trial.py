"""What runs in a Tune trial's actor: one Ray Train V2 run of one model and configuration.

The driver (genre.sweep) hands each trial a frozen `TrialSetup`; the trial builds its `TorchTrainer`
and the datasets its workers read. Light on purpose: every Ray process that runs a trial or its
Train controller imports this module, and the workers' modules (torchmetrics, the models) would
cost each of them seconds of start-up (`train_worker` imports them in the worker only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs
import ray.data
import ray.train
import ray.train.torch
from ray import tune
from ray.train.backend import Backend
from ray.tune.integration.ray_train import TuneReportCallback

from genre.config import TrainConfig
from genre.models import get_spec
from genre.storage import Storage, open_storage

# The datasets a trial hands its workers: the train split shuffled and split across them, and the
# whole train, val and test splits for rank 0 to score.
TRAIN, TRAIN_EVAL, VAL, TEST = "train", "train_eval", "val", "test"
# In the run storage: Ray Train's runs, and each trial's best checkpoint and attempt count.
TRAIN_RUNS = "train"
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares; a trial adds its model and sampled values."""

    train: TrainConfig
    features: dict[str, Any]
    labels: dict[str, str]
    train_segments: int
    storage: str
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_failures: int
    # Per model: "yes" or "no", decided by the driver where the user sees why.
    pretrained: dict[str, str]
    # Hidden, for fault-injection tests: {model: genre.faults spec}.
    faults: dict[str, str] = field(default_factory=dict)

    def trial_config(self, trial_config: dict[str, Any], trial_id: str) -> TrainConfig:
        """The training config of one trial: its model, folder and sampled values, all defaults filled."""
        model = trial_config["model"]
        overrides: dict[str, Any] = {
            "model": model,
            "pretrained": self.pretrained[model],
            "checkpoint_dir": trial_folder(open_storage(self.storage), model, trial_id).location,
            "fault": self.faults.get(model, ""),
        }
        if "lr_scale" in trial_config:
            overrides["lr"] = trial_lr(self.train, trial_config)
            overrides["batch_size"] = trial_config["batch_size"]
            overrides["dropout"] = trial_config["dropout"]
        return self.train.replace(**overrides)


@dataclass
class SingleWorkerTorchConfig(ray.train.torch.TorchConfig):
    """One worker: Torch's device set-up, without a process group.

    A process group's store (c10d TCPStore) listens on every interface, unauthenticated, whatever
    address it is given; a single worker has no one to talk to.
    """

    @property
    def backend_cls(self) -> type[Backend]:
        return Backend


def genre_trial(
    trial_config: dict[str, Any], setup: TrialSetup, datasets: dict[str, ray.data.Dataset]
) -> None:
    """One Tune trial: a Ray Train V2 run of one model and configuration."""
    trial_id = tune.get_context().get_trial_id()
    config = setup.trial_config(trial_config, trial_id)
    use_gpu = setup.gpus_per_worker > 0
    per_worker = {"CPU": setup.cpus_per_worker, **({"GPU": setup.gpus_per_worker} if use_gpu else {})}
    trainer = ray.train.torch.TorchTrainer(
        train_worker,
        torch_config=ray.train.torch.TorchConfig() if setup.num_workers > 1 else SingleWorkerTorchConfig(),
        train_loop_config={
            "train": config.to_dict(),
            "features": setup.features,
            "labels": setup.labels,
            "train_segments": setup.train_segments,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=setup.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            # Named from the trial id, never a timestamp: a relaunched trial finds its own run.
            name=f"train-{trial_id}",
            **ray_storage(open_storage(setup.storage).child(TRAIN_RUNS)),
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=setup.max_failures),
        ),
        datasets={TRAIN: datasets[TRAIN_EVAL].select_columns(["mel", "label"]), **datasets},
        dataset_config=ray.train.DataConfig(datasets_to_split=[TRAIN]),
    )
    trainer.fit()


def train_worker(loop_config: dict[str, Any]) -> None:
    """Entry point of every Ray Train worker of a trial (see genre.train_loop)."""
    # Imported here, in the worker: the trial and controller processes that unpickle this function
    # need none of the training loop's modules.
    from genre.train_loop import run_worker

    run_worker(loop_config)


def trial_folder(storage: Storage, model: str | None, trial_id: str) -> Storage:
    """Where a trial keeps its best checkpoint and its attempt count."""
    return storage.child(CHECKPOINTS, f"{model}-{trial_id}")


def trial_lr(train: TrainConfig, trial_config: dict[str, Any]) -> float | None:
    """The learning rate a trial uses: --lr or the model's, times its sampled scale."""
    model = trial_config.get("model")
    if model is None:
        return train.lr
    return (train.lr or get_spec(model).lr) * trial_config.get("lr_scale", 1.0)


def ray_storage(storage: Storage) -> dict[str, Any]:
    """RunConfig's storage arguments."""
    return {"storage_path": storage.path, "storage_filesystem": ray_filesystem(storage)}


def ray_filesystem(storage: Storage) -> pafs.FileSystem | None:
    """Ray opens a local path itself; a URI's filesystem comes with its options (endpoint, region)."""
    return None if storage.is_local else storage.filesystem
