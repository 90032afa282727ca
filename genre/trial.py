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

from genre.config import ModelDefaults, TrainConfig, TrialConfig
from genre.datasets import trial_datasets
from genre.run_folder import RunStorage
from genre.storage import Storage, open_storage


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares; a trial adds its model and sampled values."""

    train: TrainConfig
    features: dict[str, Any]
    labels: dict[str, str]
    storage: str
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_failures: int
    torch_threads: int
    # Whether each worker holds its share of the train split in memory (else it streams).
    train_held: bool
    # Per model: its registry defaults (read by the driver: the registry is slow to import), and
    # "yes" or "no" for pretrained weights, decided by the driver where the user sees why.
    defaults: dict[str, ModelDefaults]
    pretrained: dict[str, str]
    # Hidden, for fault-injection tests: {model: genre.faults spec}.
    faults: dict[str, str] = field(default_factory=dict)

    @property
    def run_storage(self) -> RunStorage:
        return RunStorage(open_storage(self.storage))

    def trial_config(self, sampled: dict[str, Any], trial_id: str) -> TrialConfig:
        """One trial's settings: its model and sampled values over the sweep's, every default filled."""
        model = sampled["model"]
        return TrialConfig.resolve(
            self.train,
            model,
            self.defaults[model],
            sampled,
            pretrained=self.pretrained.get(model, self.train.pretrained),
            folder=self.run_storage.trial(model, trial_id).location,
            torch_threads=self.torch_threads,
            fault=self.faults.get(model, ""),
        )


@dataclass
class SingleWorkerTorchConfig(ray.train.torch.TorchConfig):
    """One worker: Torch's device set-up, without a process group.

    A process group's store (c10d TCPStore) listens on every interface, unauthenticated, whatever
    address it is given; a single worker has no one to talk to.
    """

    @property
    def backend_cls(self) -> type[Backend]:
        return Backend


def genre_trial(sampled: dict[str, Any], setup: TrialSetup, datasets: dict[str, ray.data.Dataset]) -> None:
    """One Tune trial: a Ray Train V2 run of one model and configuration."""
    trial_id = tune.get_context().get_trial_id()
    config = setup.trial_config(sampled, trial_id)
    use_gpu = setup.gpus_per_worker > 0
    per_worker = {"CPU": setup.cpus_per_worker, **({"GPU": setup.gpus_per_worker} if use_gpu else {})}
    worker_datasets, data_config = trial_datasets(datasets, setup.train_held)
    trainer = ray.train.torch.TorchTrainer(
        train_worker,
        torch_config=ray.train.torch.TorchConfig() if setup.num_workers > 1 else SingleWorkerTorchConfig(),
        train_loop_config={
            "trial": config.to_dict(),
            "features": setup.features,
            "labels": setup.labels,
            "train_held": setup.train_held,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=setup.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            # Named from the trial id, never a timestamp: a relaunched trial finds its own run.
            name=f"train-{trial_id}",
            **ray_storage(setup.run_storage.train_runs),
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=setup.max_failures),
        ),
        datasets=worker_datasets,
        dataset_config=data_config,
    )
    trainer.fit()


def train_worker(loop_config: dict[str, Any]) -> None:
    """Entry point of every Ray Train worker of a trial (see genre.worker)."""
    # Imported here, in the worker: the trial and controller processes that unpickle this function
    # need none of the training loop's modules.
    from genre.worker import run_worker

    run_worker(loop_config)


def ray_storage(storage: Storage) -> dict[str, Any]:
    """RunConfig's storage arguments."""
    return {"storage_path": storage.path, "storage_filesystem": ray_filesystem(storage)}


def ray_filesystem(storage: Storage) -> pafs.FileSystem | None:
    """Ray opens a local path itself; a URI's filesystem comes with its options (endpoint, region)."""
    return None if storage.is_local else storage.filesystem
