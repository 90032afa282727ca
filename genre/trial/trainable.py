"""What runs in a Tune trial's actor: one Ray Train V2 run of one model and configuration.

The driver (genre.sweep.driver) hands each trial a frozen `TrialSetup`; the trial builds its trainer
and hands its workers a frozen `WorkerSetup` (genre.train.setup). Light on purpose: the trial's actor
and its Train controller import this module, and neither imports torch (seconds for each process,
and a sweep starts two of them per trial beside its workers): one worker needs no torch backend;
several get `TorchTrainer`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs
import ray.train
from ray import tune

from data_pipeline.ray_internals import (
    TRAIN_POLL_VARIABLE,
    TRAIN_PREEMPTION_WATCHER_VARIABLE,
    data_parallel_trainer,
)
from data_pipeline.storage import Storage
from genre.config import ModelDefaults, TrainConfig, TrialConfig
from genre.run_folder import RunStorage
from genre.run_storage.whole_files import whole_file_filesystem
from genre.train.setup import WorkerSetup
from genre.trial.report_relay import QueueReports, relay_reports

# Ray Train's controller collects one report per worker each time it polls (every 2 s by default),
# and a worker's next report waits for the last to be collected: an epoch shorter than the poll
# (most epochs on a GPU) waited for it. A poll is one small RPC per worker.
REPORT_POLL_S = 0.1
# Loaded with the module, which `genre sweep` imports first: a Ray without it stops the sweep, in one
# line, before any trial starts.
DataParallelTrainer = data_parallel_trainer()


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares; a trial adds its model and sampled values."""

    # Per model: the sweep's settings with its per_model ones over them (SweepConfig.train_for).
    train: dict[str, TrainConfig]
    # The prepared dataset, as every node sees it (the driver checks that they do), and the run storage:
    # opened by the driver, their filesystems holding any credentials of their URIs. Ray carries them
    # in memory (tune.with_parameters, then each trial's Train run), never as text to open again.
    data: Storage
    # DATA's manifest's SHA-256 as the sweep started: every read of a trial's workers checks that DATA
    # is still that dataset (a `prepare --overwrite` meanwhile stops the trial, in one line).
    manifest_sha256: str
    features: dict[str, Any]
    labels: dict[str, str]
    storage: Storage
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_failures: int
    torch_threads: int
    # Whether each worker holds its share of the train split in memory (else it streams).
    train_held: bool
    # Whether Ray is genre's own, on this machine: no node of it is ever drained (preempted).
    local_ray: bool
    # Per model: its registry defaults (read by the driver: the registry is slow to import), and
    # "yes" or "no" for pretrained weights, decided by the driver where the user sees why.
    defaults: dict[str, ModelDefaults]
    pretrained: dict[str, str]
    # Hidden, for fault-injection tests: {model: genre.train.faults spec}.
    faults: dict[str, str] = field(default_factory=dict)
    # K of a cross-validation sweep (--cv on a dataset prepared with --folds K); 0 otherwise.
    folds: int = 0
    # Windows per grid slot of the dataset's train tracks (prepare --train-hop); 1: the grid alone.
    train_offsets: int = 1

    @property
    def run_storage(self) -> RunStorage:
        return RunStorage(self.storage)

    def trial_config(self, sampled: dict[str, Any], trial_id: str) -> TrialConfig:
        """One trial's settings: its model and sampled values over the sweep's, every default filled."""
        model = sampled["model"]
        return TrialConfig.resolve(
            self.train[model],
            model,
            self.defaults[model],
            sampled,
            pretrained=self.pretrained.get(model, self.train[model].pretrained),
            folds=self.folds,
            train_offsets=self.train_offsets,
            folder=self.run_storage.trial(model, trial_id).location,
            torch_threads=self.torch_threads,
            fault=self.faults.get(model, ""),
        )

    def worker_setup(self, sampled: dict[str, Any], trial_id: str) -> WorkerSetup:
        """What each of the trial's workers is handed: its settings, its folder and the dataset."""
        config = self.trial_config(sampled, trial_id)
        return WorkerSetup(
            trial=config,
            folder=self.run_storage.trial(config.model, trial_id),
            data=self.data,
            manifest_sha256=self.manifest_sha256,
            features=self.features,
            labels=self.labels,
            train_held=self.train_held,
        )


def genre_trial(sampled: dict[str, Any], setup: TrialSetup) -> None:
    """One Tune trial: a Ray Train V2 run of one model and configuration."""
    trial_id = tune.get_context().get_trial_id()
    worker_setup = setup.worker_setup(sampled, trial_id)
    if setup.local_ray:
        # Ray Train watches every node for a drain notice from a cluster's autoscaler; on one
        # machine none comes, and the watcher is one more process per trial.
        os.environ.setdefault(TRAIN_PREEMPTION_WATCHER_VARIABLE, "0")
    os.environ.setdefault(TRAIN_POLL_VARIABLE, str(REPORT_POLL_S))
    use_gpu = setup.gpus_per_worker > 0
    per_worker = {"CPU": setup.cpus_per_worker, **({"GPU": setup.gpus_per_worker} if use_gpu else {})}
    trainer_class, backend = _data_parallel(setup.num_workers)

    def run(reports: QueueReports) -> None:
        trainer = trainer_class(
            # Bound to the entry point: Ray's `train_loop_config` would carry the setup as a dict.
            functools.partial(train_worker, worker_setup),
            scaling_config=ray.train.ScalingConfig(
                num_workers=setup.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker
            ),
            run_config=ray.train.RunConfig(
                # Named from the trial id, never a timestamp: a relaunched trial finds its own run.
                name=f"train-{trial_id}",
                # Ray Train keeps its filesystem in memory only (its run state records the path).
                storage_path=setup.run_storage.train_runs.path,
                storage_filesystem=ray_filesystem(setup.run_storage.train_runs),
                callbacks=[reports],
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
                failure_config=ray.train.FailureConfig(max_failures=setup.max_failures),
            ),
            **backend,
        )
        trainer.fit()

    relay_reports(run)


def _data_parallel(num_workers: int) -> tuple[type[DataParallelTrainer], dict[str, Any]]:
    """Ray Train's trainer for the workers, and its backend's arguments.

    One worker needs no process group: Ray's base backend, and no torch in this process. A process
    group's store (c10d TCPStore) would also listen on every interface, unauthenticated, for nobody.
    Several workers: TorchTrainer, whose backend joins them in a process group (gloo, or NCCL on GPUs).
    """
    if num_workers == 1:
        return DataParallelTrainer, {"backend_config": ray.train.BackendConfig()}
    from ray.train.torch import TorchTrainer

    return TorchTrainer, {}


def train_worker(setup: WorkerSetup) -> None:
    """Entry point of every Ray Train worker of a trial (see genre.train.worker)."""
    # Imported here, in the worker: the trial and controller processes that unpickle this function
    # need none of the training loop's modules.
    from genre.train.worker import run_worker

    run_worker(setup)


def ray_storage(storage: Storage) -> dict[str, Any]:
    """Ray Tune's RunConfig storage arguments (Tune.restore takes the same filesystem).

    Tune pickles its filesystem into files (tuner.pkl, the experiment state in the storage): one that
    holds credentials is handed over held in Ray's object store (genre.run_storage.held)."""
    filesystem = ray_filesystem(storage)
    if filesystem is not None and storage.holds_credentials:
        from genre.run_storage.held import held_filesystem

        filesystem = held_filesystem(storage)
    return {"storage_path": storage.path, "storage_filesystem": filesystem}


def ray_filesystem(storage: Storage) -> pafs.FileSystem:
    """A local path's, where every file Ray writes is whole or absent (genre.run_storage.whole_files); a URI's
    comes with its options (endpoint, region)."""
    return whole_file_filesystem() if storage.is_local else storage.filesystem
