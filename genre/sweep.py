"""`genre sweep`: the architectures as concurrent Ray Tune trials, each a Ray Train V2 run.

Each trial is a Tune function that builds a `TorchTrainer` named from its trial id (so a relaunch
resumes it) and reports through `TuneReportCallback`. Results land in one table.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import ray.data
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from data_pipeline.errors import UserInputError
from data_pipeline.manifest import manifest_hash, read_manifest
from data_pipeline.ray_connect import connect_ray
from data_pipeline.shards import check_shards, shard_paths
from data_pipeline.split import SPLITS
from genre.config import TrainConfig
from genre.live_view import LiveView
from genre.models import PRETRAINED_MODES, get_spec, model_names, resolve_weights
from genre.plots import write_plots
from genre.resources import DRIVER_CPUS, ResourcePlan, plan_resources
from genre.results import (
    HISTORY_COLUMNS,
    config_json,
    relative_to_run,
    render_table,
    results_frame,
    write_results,
)
from genre.shared_paths import check_shared
from genre.storage import Storage, open_storage
from genre.sweep_record import (
    SWEEP_FILE,
    SWEEP_LEVEL,
    TRAIN_OPTIONS,
    SweepRecord,
    flag,
    read_sweep_record,
    record_resume,
    resume_changes,
    write_sweep_record,
)
from genre.train_batches import held_in_memory, shard_mib
from genre.train_loop import attempts
from genre.trial import (
    TEST,
    TRAIN_EVAL,
    VAL,
    TrialSetup,
    genre_trial,
    ray_filesystem,
    ray_storage,
    trial_folder,
    trial_lr,
)

EXPERIMENT = "tune"
SCHEDULERS = ("fifo", "asha")
METRIC, MODE = "val_segment_accuracy", "max"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SweepConfig:
    """Everything `genre sweep` needs; the CLI builds it from its arguments."""

    data: Path
    out: Path
    models: tuple[str, ...] = field(default_factory=lambda: tuple(model_names()))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(model="", data=""))
    num_samples: int = 1
    scheduler: str = "fifo"
    num_workers: int = 1
    cpus_per_trial: float | None = None
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    # Restarts of a trial's workers from its last checkpoint after a failure (a lost node, a kill).
    max_failures: int = 1
    resume: bool = False
    address: str | None = None
    # Tune's and Train's run state and the best checkpoints: a path or an s3:// / gs:// URI.
    # None: OUT itself (or, when resuming, the storage the sweep in OUT was started with).
    storage: str | None = None
    # Hidden, for fault-injection tests: {model: genre.faults spec}.
    faults: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: dict[str, Any], **rest: Any) -> SweepConfig:
        """A sweep from its options by name (as `options()` gives them); defaults for those left out."""
        train = TrainConfig(model="", data="", **{n: options[n] for n in TRAIN_OPTIONS if n in options})
        models = tuple(options.get("models") or model_names())
        return cls(models=models, train=train, **{n: options[n] for n in SWEEP_LEVEL if n in options}, **rest)

    def options(self) -> dict[str, Any]:
        """The options that define this sweep, by name: what sweep.json records for --resume."""
        return {
            "models": list(self.models),
            **{name: getattr(self.train, name) for name in TRAIN_OPTIONS},
            **{name: getattr(self, name) for name in SWEEP_LEVEL},
        }


@dataclass
class SweepResult:
    """The finished sweep: its table, and where its files are."""

    table: pd.DataFrame
    paths: dict[str, Path]
    plan: ResourcePlan
    wall_seconds: float
    storage: str = ""


def run_sweep(config: SweepConfig, progress: Progress = print) -> SweepResult:
    """Validate, fit the trials to the cluster, run them with Tune, and write the results."""
    started = time.perf_counter()
    manifest = read_manifest(config.data)
    _validate(config, manifest)
    check_shards(config.data, manifest)
    out = config.out.resolve()
    record = _resumed_record(config, out, progress) if config.resume else _new_record(config, out)
    storage = open_storage(record.storage)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_sweep_record(out, record)
    except OSError as error:
        raise UserInputError(f"cannot write to OUT {str(config.out)!r}: {error.strerror}") from None

    connect_ray(config.address, dashboard=True, worker_logs=False)
    check_shared(config.data, storage, progress)
    resources = ray.cluster_resources()
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    trials = len(config.models) * config.num_samples
    plan = plan_resources(
        cluster_cpus=resources.get("CPU", 0.0),
        cluster_gpus=resources.get("GPU", 0.0),
        num_trials=trials,
        num_workers=config.num_workers,
        cpus_per_trial=config.cpus_per_trial,
        gpus_per_trial=config.gpus_per_trial,
        max_concurrent=config.max_concurrent,
        largest_node_cpus=max((node.get("CPU", 0.0) for node in nodes), default=None),
        largest_node_gpus=max((node.get("GPU", 0.0) for node in nodes), default=None),
    )
    for note in plan.notes:
        progress(f"note: {note}")
    progress(f"sweep: {trials} trial(s) of {', '.join(config.models)}; {plan.describe()}")

    pretrained = _decide_pretrained(config, progress)
    progress("reading the dataset once for every trial and epoch (Ray Data)")
    progress(_train_split_note(config.train, manifest, plan.num_workers))
    datasets = open_datasets(config.data)
    trainable = tune.with_resources(
        tune.with_parameters(
            genre_trial,
            setup=TrialSetup(
                train=config.train.replace(
                    data=str(Path(config.data).resolve()), torch_threads=plan.torch_threads
                ),
                features=manifest["features"],
                labels=manifest["labels"],
                train_segments=manifest["counts"]["train"]["segments"],
                storage=storage.location,
                num_workers=plan.num_workers,
                cpus_per_worker=plan.cpus_per_worker,
                gpus_per_worker=plan.gpus_per_worker,
                max_failures=config.max_failures,
                pretrained=pretrained,
                faults=dict(config.faults),
            ),
            datasets=datasets,
        ),
        {"cpu": DRIVER_CPUS},
    )
    tuner = _tuner(config, trainable, plan, storage, progress)
    # Tune's own console output (a banner, then tables) would interleave with the live view, and on
    # a busy laptop it warns that processing a result took half a second: expected, not actionable.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C stops the sweep at once, as a kill would: Tune's own handler would instead wind the
    # trials down and return them as if the sweep had ended. Its state is saved as it goes, for --resume.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    grid = tuner.fit()

    table, history = _collect(grid, config, manifest, storage)
    header = {
        "data": str(Path(config.data).resolve()),
        "manifest_sha256": manifest_hash(config.data),
        "split_protocol": _protocol(manifest),
        "leaky": manifest["split"].get("leaks_tracks_across_splits", False),
        "storage": storage.location,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    paths = write_results(out, table, history, header)
    paths["plots"] = out / "plots"
    write_plots(history, paths["plots"])
    return SweepResult(table, paths, plan, time.perf_counter() - started, storage.location)


def _new_record(config: SweepConfig, out: Path) -> SweepRecord:
    """A new sweep's record; its run storage is --storage, else OUT, and holds no sweep yet."""
    storage = open_storage(config.storage or out)
    if storage.child(EXPERIMENT).exists():
        where = "OUT" if storage.location == str(out) else f"the storage {storage}"
        raise UserInputError(f"{where} already holds a sweep; pass --resume to continue it")
    data = Path(config.data).resolve()
    return SweepRecord(storage.location, str(data), manifest_hash(data), config.options())


def _resumed_record(config: SweepConfig, out: Path, progress: Progress) -> SweepRecord:
    """The record of the sweep in OUT, after checking that `config` continues that very sweep."""
    record = read_sweep_record(out)
    if record is None:
        raise UserInputError(
            f"OUT {str(config.out)!r} holds no sweep to resume (no {SWEEP_FILE}); leave out --resume to "
            "start one"
        )
    storage = open_storage(record.storage)
    if config.storage and open_storage(config.storage).location != storage.location:
        raise UserInputError(
            f"--storage {open_storage(config.storage)} is not where the sweep in OUT keeps its run state "
            f"({storage}); leave --storage out to resume it"
        )
    if record.manifest_sha256 and manifest_hash(config.data) != record.manifest_sha256:
        raise UserInputError(
            f"DATA {str(config.data)!r} is not the dataset the sweep in OUT was started on "
            f"({record.data}, manifest sha256 {record.manifest_sha256[:12]}); resume it on that dataset"
        )
    options = config.options()
    changed = resume_changes(record.options, options)
    experiment = storage.child(EXPERIMENT)
    if not tune.Tuner.can_restore(experiment.path, storage_filesystem=ray_filesystem(storage)):
        raise UserInputError(
            f"the sweep in OUT {str(config.out)!r} never started a trial (no run state in {experiment}); "
            "run it again without --resume"
        )
    for name, (old, new) in changed.items():
        progress(f"resuming with {flag(name)} {new} (the sweep had {old})")
    return record_resume(record, options, changed)


def _train_split_note(train: TrainConfig, manifest: dict[str, Any], num_workers: int) -> str:
    size = shard_mib(manifest["features"], manifest["counts"]["train"]["segments"], num_workers)
    where = "held in memory" if held_in_memory(size, train) else "streamed every epoch"
    return (
        f"train split: {size:.0f} MiB per worker, {where} (--train-in-memory-mib {train.train_in_memory_mib})"
    )


def _tuner(
    config: SweepConfig, trainable, plan: ResourcePlan, storage: Storage, progress: Progress
) -> tune.Tuner:
    """A new Tuner, or the interrupted one in the storage when resuming (finished trials are not rerun)."""
    experiment = storage.child(EXPERIMENT)
    filesystem = ray_filesystem(storage)
    if config.resume:
        progress(f"resuming the sweep in {experiment}")
        return tune.Tuner.restore(
            experiment.path, trainable, resume_errored=True, storage_filesystem=filesystem
        )
    return tune.Tuner(
        trainable,
        param_space=_param_space(config),
        tune_config=tune.TuneConfig(
            num_samples=config.num_samples,
            max_concurrent_trials=plan.max_concurrent,
            scheduler=_scheduler(config),
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            **ray_storage(storage),
            # Ray Train restarts a trial's workers in place (max_failures there). A trial that still
            # fails is final here: retrying it in Tune as well would multiply the attempts; a lost
            # trial driver is picked up again by --resume.
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[LiveView()],
            verbose=0,
        ),
    )


def _validate(config: SweepConfig, manifest: dict[str, Any]) -> None:
    unknown = [m for m in config.models if m not in model_names()]
    if unknown:
        raise UserInputError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(model_names())}")
    if not config.models:
        raise UserInputError("--models names no model")
    for split in SPLITS:
        if manifest["counts"][split]["segments"] == 0:
            raise UserInputError(
                f"the dataset's {split} split is empty; a sweep needs train, val and test segments"
            )
    if config.train.pretrained not in PRETRAINED_MODES:
        raise UserInputError(f"--pretrained must be one of {', '.join(PRETRAINED_MODES)}")
    if config.scheduler not in SCHEDULERS:
        raise UserInputError(f"--scheduler must be one of {', '.join(SCHEDULERS)}")
    if config.num_samples < 1:
        raise UserInputError("--num-samples must be at least 1")
    if config.max_failures < 0:
        raise UserInputError(
            f"--max-failures must be 0 or more, not {config.max_failures} (a trial that fails forever "
            "would never end the sweep)"
        )


def _protocol(manifest: dict[str, Any]) -> str:
    split = manifest["split"]
    method = split.get("method", "")
    return f"{split['protocol']} ({method})" if method else split["protocol"]


def _param_space(config: SweepConfig) -> dict[str, Any]:
    space: dict[str, Any] = {"model": tune.grid_search(list(config.models)), "epochs": config.train.epochs}
    if config.num_samples > 1:
        # Sampled around each model's own defaults: lr x [0.1, 10] log-uniform, batch, dropout.
        space["lr_scale"] = tune.loguniform(0.1, 10.0)
        space["batch_size"] = tune.choice([16, 32, 64])
        space["dropout"] = tune.uniform(0.1, 0.5)
    return space


def _scheduler(config: SweepConfig):
    if config.scheduler == "asha":
        # Stops trials whose validation accuracy trails the others at the same epoch.
        return ASHAScheduler(
            metric=METRIC,
            mode=MODE,
            time_attr="training_iteration",
            max_t=config.train.epochs + 1,
            grace_period=1,
        )
    return FIFOScheduler()


def _decide_pretrained(config: SweepConfig, progress: Progress) -> dict[str, str]:
    """Per model, 'yes' or 'no', decided here so that the user sees why weights are missing.

    Workers load the weights themselves; a worker that then cannot find them fails with the same
    message as `--pretrained yes`.
    """
    decisions = {}
    for model in config.models:
        spec = get_spec(model)
        source = resolve_weights(
            spec.pretrained_weights,
            config.train.pretrained,
            config.train.weights_dir,
            model=model,
            warn=lambda text: progress(f"warning: {text}"),
        )
        decisions[model] = "yes" if source is not None else "no"
    return decisions


def open_datasets(data: str | Path) -> dict[str, ray.data.Dataset]:
    """The splits as Ray Datasets, read once and held in Ray's object store for every trial.

    The float16 log-mels of a GTZAN-sized dataset are ~350 MB: one read serves all epochs of all
    trials (Ray spills to disk what memory cannot hold). Evaluation keeps the track ids for
    track-level scores; training selects only mel and label from the same blocks.
    """
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Batches in file order: with the seeded shuffle, the same seed gives the same metrics.
    context.execution_options.preserve_order = True
    columns = ["mel", "label", "track_id"]
    manifest = read_manifest(data)
    splits = {
        name: ray.data.read_parquet(shard_paths(data, manifest, name), columns=columns) for name in SPLITS
    }
    return {
        TRAIN_EVAL: splits["train"].materialize(),
        VAL: splits["val"].materialize(),
        TEST: splits["test"].materialize(),
    }


def _collect(
    grid, config: SweepConfig, manifest: dict[str, Any], storage: Storage
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, histories = [], []
    manifest_sha = manifest_hash(config.data)
    for result in grid:
        trial_config = result.config or {}
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or _trial_id_from_path(result.path)
        finished = bool(metrics.get("final"))
        status = "completed" if finished else "error" if result.error else "stopped"
        row = {
            **{k: v for k, v in metrics.items() if not isinstance(v, dict) and k != "history"},
            "model": trial_config.get("model"),
            "trial_id": trial_id,
            "status": status,
            "error": _error_line(result.error) if result.error else "",
            "retries": max(
                attempts(trial_folder(storage, trial_config.get("model"), trial_id).location) - 1, 0
            ),
            "split_protocol": _protocol(manifest),
            "epochs": (metrics.get("epoch", -1) + 1) if metrics else 0,
            "seed": config.train.seed,
            "lr": metrics.get("lr") or trial_lr(config.train, trial_config),
            "batch_size": metrics.get("batch_size")
            or trial_config.get("batch_size", config.train.batch_size),
            "dropout": metrics.get("dropout") or trial_config.get("dropout", config.train.dropout),
            "checkpoint": relative_to_run(metrics.get("checkpoint"), config.out.resolve()),
            "dataset_manifest_sha256": manifest_sha,
            "config": config_json({**config.train.to_dict(), **trial_config}),
        }
        rows.append(row)
        # A finished trial's own record of its epochs; else what Tune saw (an interrupted trial
        # restarted from a checkpoint may miss epochs reported before the interruption).
        history = metrics.get("history")
        frame = pd.DataFrame(json.loads(history)) if history else result.metrics_dataframe
        if frame is not None and not frame.empty:
            epochs = frame[frame.get("final", pd.Series(0, index=frame.index)).fillna(0) != 1].copy()
            epochs["model"], epochs["trial_id"] = row["model"], row["trial_id"]
            histories.append(epochs.reindex(columns=HISTORY_COLUMNS))
    order = {name: i for i, name in enumerate(model_names())}
    table = results_frame(rows)
    table = table.sort_values(by="model", key=lambda s: s.map(order)).reset_index(drop=True)
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame(columns=HISTORY_COLUMNS)
    return table, history


def _trial_id_from_path(path: str | None) -> str:
    # Tune names trial folders "<trainable>_<experiment-id>_<index>_<params>..."; the id is the pair.
    match = re.search(r"_([0-9a-f]{5}_\d{5})", path or "")
    return match.group(1) if match else ""


def _error_line(error: BaseException) -> str:
    """The error's one line, with what to do about running out of memory."""
    line = _one_line(error)
    if "OutOfMemoryError" in line:
        line += " (lower --batch-size, or give each trial more memory: fewer trials per GPU)"
    return line


def _one_line(error: BaseException) -> str:
    """The innermost 'SomeError: message' line of a (Ray-wrapped) exception."""
    text = str(error)
    matches = re.findall(
        r"^\s*([A-Za-z_.]*(?:Error|Exception|Failure)[A-Za-z_]*: .+)$", text, flags=re.MULTILINE
    )
    line = matches[-1].strip() if matches else (text.strip().splitlines() or [type(error).__name__])[0]
    return line[:300]


__all__ = ["SweepConfig", "SweepResult", "render_table", "run_sweep"]
