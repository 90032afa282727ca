"""`genre sweep`, the driver: check, fit the trials to the cluster, run them with Tune, write results.

Each trial (genre.trial.trainable) builds a Ray Train V2 `TorchTrainer` named from its trial id (so a
relaunch resumes it); each worker (genre.train.worker) runs genre.train.fit's loop. Results land in one table.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter

from data_pipeline.errors import UserInputError
from data_pipeline.loopback import requested_cluster
from data_pipeline.manifest import DatasetChanged, read_manifest_and_hash
from data_pipeline.ray_connect import connect_ray
from data_pipeline.shards import MIXED_SHARDS, check_shards
from data_pipeline.split import cv_splits
from data_pipeline.storage import Storage, open_storage
from genre.config import BEST_BY
from genre.models import get_spec, resolve_weights
from genre.reports import is_final
from genre.run_folder import EXPERIMENT, RunFolder, RunStorage
from genre.sweep.autoscaler import scalable_node_types
from genre.sweep.live_view import LiveView
from genre.sweep.lock import holding_lock
from genre.sweep.options import SweepConfig, dataset_folds, dataset_train_offsets, parse_search_space
from genre.sweep.plan import (
    DRIVER_CPUS,
    ResourcePlan,
    ResourceRequest,
    held_in_memory,
    plan_cluster,
    plan_resources,
    shard_mib,
    sharing_note,
)
from genre.sweep.plots import write_plots
from genre.sweep.preflight import check_shared
from genre.sweep.record import new_record, resumed_record, write_sweep_record
from genre.sweep.results import collect, trial_dirname, write_results
from genre.sweep.results_text import render_table
from genre.sweep.search import unit_search
from genre.sweep.storage_faults import StopOnRefusedWrites, check_storage_answers, watch_storage, writing_into
from genre.sweep.trackers import tracker_callbacks
from genre.trial.trainable import TrialSetup, genre_trial, ray_storage

Progress = Callable[[str], None]
EXPERIMENT_STATE_EVERY_S = 2
# Tune's saved state of an experiment's trials (ray.tune's TuneController.CKPT_FILE_TMPL; a test
# compares them).
TUNE_EXPERIMENT_STATE = "experiment_state-*.json"


@dataclass
class SweepResult:
    """The finished sweep: its table, and where its files are."""

    table: pd.DataFrame
    run: RunFolder
    storage: RunStorage
    plan: ResourcePlan
    wall_seconds: float

    def summary(self) -> str:
        """The table, then where everything is and how long it took."""
        files = self.run.results
        failed = (self.table["status"] == "error").sum()
        return "\n".join(
            [
                render_table(self.table),
                "",
                f"results: {files['markdown']} (and .csv, .parquet); per epoch: {files['history']}",
                f"plots: {self.run.plots}/; best checkpoints: {self.storage.describe_trials()}",
                *([f"{failed} trial(s) failed: see the error column"] if failed else []),
                f"sweep took {self.wall_seconds:.0f} s",
            ]
        )


def run_sweep(config: SweepConfig, progress: Progress = print) -> SweepResult:
    """Validate, fit the trials to the cluster, run them with Tune, and write the results."""
    started = time.perf_counter()
    # The hash of the very manifest read: the dataset every read of the sweep must still find.
    manifest, manifest_sha256 = read_manifest_and_hash(config.data)
    config.check(manifest)
    check_shards(config.data, manifest)
    run = RunFolder(config.out.resolve())
    check_storage_answers(config)
    # One command at a time in OUT (genre.sweep.lock); a refused start leaves OUT as it was.
    with contextlib.ExitStack() as locks:
        where = f"OUT {str(config.out)!r}"
        locks.enter_context(holding_lock(open_storage(run.out), where, _command(config), progress))
        return _run_locked(config, manifest, manifest_sha256, run, locks, started, progress)


def _command(config: SweepConfig) -> str:
    """The command a lock names as its holder."""
    return "genre sweep --resume" if config.resume else "genre sweep"


def _run_locked(
    config: SweepConfig,
    manifest: dict[str, Any],
    manifest_sha256: str,
    run: RunFolder,
    locks: contextlib.ExitStack,
    started: float,
    progress: Progress,
) -> SweepResult:
    """The sweep, OUT locked: its record, Ray, the trials, the results."""
    record = resumed_record(config, run.out, progress) if config.resume else new_record(config, run.out)
    if record.manifest_sha256 and record.manifest_sha256 != manifest_sha256:  # DATA replaced since the start
        raise DatasetChanged(
            f"DATA {str(config.data)!r} changed while the sweep was starting (prepared again?); run the "
            "sweep again once DATA stays as it is"
        )
    # The storage as given (its credentials, if any, in its filesystem); the record names it without them.
    storage = RunStorage(open_storage(config.storage or record.storage))
    if storage.location != open_storage(run.out).location:  # --storage elsewhere: locked as well
        where = f"the run storage {storage.storage}"
        locks.enter_context(holding_lock(storage.storage, where, _command(config), progress))

    spaces = _search_spaces(config, manifest)
    # ASHA stops trials early, and only Ray Train's placement group cleaner, through the dashboard's
    # state API, then frees their workers' resources (without it, later trials wait forever).
    connect_ray(config.address, dashboard=config.scheduler == "asha", worker_logs=False)
    check_shared(config.data, storage.storage, progress)
    trials = config.trial_count(manifest)
    plan = _plan(config, trials)
    sharing = sharing_note(plan, local=requested_cluster(config.address) is None)
    for note in (*plan.notes, *([sharing] if sharing else [])):
        progress(f"note: {note}")
    progress(f"sweep: {trials} trial(s) of {', '.join(config.models)}; {plan.describe()}")
    if spaces:
        searched = sorted({name for space in spaces.values() for name in space})
        progress(
            f"search: {config.search}, {config.num_samples} configuration(s) per model over "
            f"{', '.join(searched)}"
        )

    held = _train_held(config, manifest, plan.num_workers, progress)
    setup = TrialSetup(
        train={model: config.train_for(model) for model in config.models},
        data=open_storage(config.data),
        manifest_sha256=manifest_sha256,
        features=manifest["features"],
        labels=manifest["labels"],
        storage=storage.storage,
        num_workers=plan.num_workers,
        cpus_per_worker=plan.cpus_per_worker,
        gpus_per_worker=plan.gpus_per_worker,
        max_failures=config.max_failures,
        torch_threads=plan.torch_threads,
        train_held=held,
        local_ray=requested_cluster(config.address) is None,
        defaults={model: get_spec(model).defaults for model in config.models},
        pretrained=_decide_pretrained(config, progress),
        faults=dict(config.faults),
        folds=dataset_folds(manifest) if config.cv else 0,
        train_offsets=dataset_train_offsets(manifest),
    )
    trainable = tune.with_resources(
        tune.with_parameters(genre_trial, setup=setup),
        {"cpu": DRIVER_CPUS},
    )
    # Only now, every check passed and Ray reached: a sweep.yaml in OUT is a sweep that started.
    try:
        write_sweep_record(run.out, record)
    except OSError as error:
        raise UserInputError(f"cannot write to OUT {str(config.out)!r}: {error.strerror}") from None
    tuner = _tuner(config, trainable, plan, storage, setup.folds, spaces, progress)
    # Tune's own console output (a banner, then tables) would interleave with the live view, and on
    # a busy laptop it warns that processing a result took half a second: expected, not actionable.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune saves which trials have finished (for --resume) at most every 10 s by default: a trial
    # that finished less than that before a kill was trained again by --resume. The file is small.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(EXPERIMENT_STATE_EVERY_S))
    # Ctrl-C stops the sweep at once, as a kill would: Tune's own handler would instead wind the
    # trials down and return them as if the sweep had ended. Its state is saved as it goes, for --resume.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    with watch_storage(_run_storage_name(config, storage), storage.storage):
        grid = tuner.fit()

    header = {
        "data": open_storage(config.data).location,  # without credentials written into its URI
        "manifest_sha256": manifest_sha256,  # as the sweep started (and sweep.yaml records)
        "split_protocol": _protocol(manifest),
        "leaky": manifest["split"].get("leaks_tracks_across_splits", False),
        "storage": storage.location,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with writing_into(f"OUT {str(config.out)!r}", run.out):
        table, history = collect(grid, setup, run, header)
        write_plots(history, run.plots)
        write_results(run, table, history, header, appendix=_write_summary(config, manifest, table, run))
    return SweepResult(table, run, storage, plan, time.perf_counter() - started)


def _run_storage_name(config: SweepConfig, storage: RunStorage) -> str:
    """The run storage as the user named it: OUT, unless --storage put it elsewhere."""
    if storage.location == open_storage(config.out).location:
        return f"OUT {str(config.out)!r}"
    return f"the run storage {storage.storage}"


def _plan(config: SweepConfig, trials: int) -> ResourcePlan:
    """The trials' resources, from what Ray has (genre.sweep.plan decides); a cluster reached by
    address may also grow, with the nodes its autoscaler can add (genre.sweep.autoscaler reads them)."""
    resources = ray.cluster_resources()
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    request = ResourceRequest(
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
    cluster = requested_cluster(config.address)
    if cluster is None:
        return plan_resources(request)  # genre's own Ray: this machine, and nothing more
    growth = scalable_node_types(ray_client=cluster.startswith("ray://"))
    return plan_cluster(request, growth)


def _train_held(config: SweepConfig, manifest: dict[str, Any], num_workers: int, progress: Progress) -> bool:
    """Whether each worker holds its share of the train split in memory (a cross-validation trial's:
    its train folds, the largest of any fold's decides for all); says so either way."""
    train = config.train
    folds = dataset_folds(manifest) if config.cv else 0
    train_groups = [cv_splits(k, folds)["train"] for k in range(folds)] if folds else ["train"]
    segments = max(_segments(manifest, groups) for groups in train_groups)
    size = shard_mib(manifest["features"], segments, num_workers)
    held = held_in_memory(size, train.train_in_memory_mib)
    if dataset_train_offsets(manifest) > 1 and not held:
        raise UserInputError(
            f"DATA keeps train windows between the grid's (--train-hop): each worker must hold the train "
            f"split in memory ({size:.0f} MiB), above --train-in-memory-mib {train.train_in_memory_mib}: "
            "raise it, or add --num-workers"
        )
    if not held and manifest.get("shard_order") != MIXED_SHARDS:
        raise UserInputError(
            f"DATA's shards each hold one genre (prepared before genre mixed its shards), so a train split "
            f"streamed shard by shard ({size:.0f} MiB per worker, above --train-in-memory-mib "
            f"{train.train_in_memory_mib}) would reach the model genre by genre: prepare DATA again, or hold "
            "it in memory (raise --train-in-memory-mib, or add --num-workers)"
        )
    shards = min(sum(len(manifest["shards"][g]) for g in groups.split(",")) for groups in train_groups)
    if not held and shards < num_workers:
        raise UserInputError(
            f"a streamed train split is dealt to the workers shard file by shard file, and DATA's has "
            f"{shards} file(s) for {num_workers} workers: lower --num-workers, raise --train-in-memory-mib, "
            "or prepare DATA again with a smaller --tracks-per-shard"
        )
    where = "held in memory" if held else "streamed every epoch"
    progress(
        f"train split: {size:.0f} MiB per worker, {where} (--train-in-memory-mib {train.train_in_memory_mib})"
    )
    return held


def _segments(manifest: dict[str, Any], groups: str) -> int:
    return sum(manifest["counts"][group]["segments"] for group in groups.split(","))


def _write_summary(config: SweepConfig, manifest: dict[str, Any], table: pd.DataFrame, run: RunFolder) -> str:
    """summary.csv and plots/summary.png, and the section of results.md that goes with them (returned):
    each model's test scores over its folds and seeds, with 95% intervals, and the models compared in
    pairs on the same folds."""
    from genre.sweep import summary

    folds = dataset_folds(manifest) if config.cv else 0
    per_model = summary.summarize(table)
    ratio = summary.cv_test_train_ratio(folds) if folds else None
    pairs = summary.compare_pairs(table, test_train_ratio=ratio)
    split = manifest["split"]
    how = (
        "by segment, as the 2021 study (tracks leak across splits)"
        if split.get("protocol") == "segment"
        else f"by track, from the split lists {split.get('lists', '')}".rstrip()
        if split.get("method") == "lists"
        else "by track, stratified by genre"
    )
    protocol = summary.protocol_text(folds or None, config.seeds, how)
    if config.num_samples > 1:
        protocol += (
            f"; each model's {config.num_samples} sampled configurations (--num-samples) count as its runs, "
            "so an interval spans configurations, not repeats of one"
        )
    per_model.to_csv(run.results["summary"], index=False)
    summary.plot_summary(per_model, run.plots / "summary.png", runs=table)
    return summary.summary_markdown(per_model, pairs, protocol)


def _search_spaces(config: SweepConfig, manifest: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Each model's search space (--search-space, else the model's own from the registry), checked;
    None when the trials search nothing and take the sweep's settings."""
    if not config.searches():
        return None
    if config.search_space is not None:  # checked with the options
        return {model: config.search_space for model in config.models}
    spaces = {}
    for model in config.models:
        train = config.train_for(model)
        spaces[model] = parse_search_space(get_spec(model).search_space(train.lr))
        config.check_space(spaces[model], manifest, train)
    return spaces


def _tuner(
    config: SweepConfig,
    trainable,
    plan: ResourcePlan,
    storage: RunStorage,
    folds: int,
    spaces: dict[str, dict[str, Any]] | None,
    progress: Progress,
) -> tune.Tuner:
    """A new Tuner, or the interrupted one in the storage when resuming (finished trials are not rerun,
    and the search goes on from its saved state)."""
    experiment = storage.experiment
    if config.resume and _has_trial_state(experiment):
        progress(f"resuming the sweep in {experiment}")
        filesystem = ray_storage(storage.storage)["storage_filesystem"]
        return tune.Tuner.restore(
            experiment.path, trainable, resume_errored=True, storage_filesystem=filesystem
        )
    if config.resume:
        # Stopped between its Tuner's file and Tune's first save of its trials: nothing ran that a
        # restore would find (it would fail on the empty experiment), so the recorded sweep starts again.
        progress(f"the sweep in {experiment} was stopped before it saved any trial: starting it afresh")
    return tune.Tuner(
        trainable,
        # Tune's grid of the units; a search's trials take their units from the searcher.
        param_space=_param_space(config, folds) if spaces is None else {},
        tune_config=tune.TuneConfig(
            **_search_config(config, plan, folds, spaces),
            scheduler=_scheduler(config),
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            **ray_storage(storage.storage),
            # Ray Train restarts a trial's workers in place (max_failures there). A trial that still
            # fails is final here: retrying it in Tune as well would multiply the attempts; a lost
            # trial driver is picked up again by --resume.
            failure_config=tune.FailureConfig(max_failures=0),
            # First: a refused write stops the sweep before any other callback reports its trial.
            callbacks=[
                StopOnRefusedWrites(),
                LiveView({model: config.train_for(model).epochs for model in config.models}),
                *tracker_callbacks(config.mlflow, config.wandb, _tracker_tags(config)),
            ],
            verbose=0,
        ),
    )


def _has_trial_state(experiment: Storage) -> bool:
    """Whether Tune saved the experiment's trials (its `experiment_state-<time>.json`, the file a
    restore reads), rather than only the Tuner that a sweep writes first."""
    try:
        entries = experiment.filesystem.get_file_info(pafs.FileSelector(experiment.path))
    except (FileNotFoundError, OSError):
        return False
    return any(fnmatch.fnmatch(entry.base_name, TUNE_EXPERIMENT_STATE) for entry in entries)


def _tracker_tags(config: SweepConfig) -> dict[str, Any]:
    """What a tracker's runs record of the sweep: where it is and every option it runs with."""
    places = {"out": config.out.resolve(), "data": open_storage(config.data).location}
    return {**places, **{k: v for k, v in config.options().items() if v is not None}}


def _protocol(manifest: dict[str, Any]) -> str:
    split = manifest["split"]
    method = split.get("method", "")
    return f"{split['protocol']} ({method})" if method else split["protocol"]


def _search_config(
    config: SweepConfig, plan: ResourcePlan, folds: int, spaces: dict[str, dict[str, Any]] | None
) -> dict[str, Any]:
    """TuneConfig's search: Tune's grid, one trial per unit; or a UnitSearch (genre.sweep.search) that
    gives each unit its --num-samples configurations."""
    if spaces is None:
        return {"num_samples": 1, "max_concurrent_trials": plan.max_concurrent}
    units = _units(config, folds)
    searcher = unit_search(
        config.search, units, [spaces[unit["model"]] for unit in units], config.num_samples, config.train.seed
    )
    # The planner's trials at once, and no more suggestions than that: each suggestion then comes
    # after the scores of all but the trials still running.
    return {
        "search_alg": ConcurrencyLimiter(searcher, max_concurrent=plan.max_concurrent),
        "num_samples": len(units) * config.num_samples,
    }


def _units(config: SweepConfig, folds: int) -> list[dict[str, Any]]:
    """What a search's trials of one unit share: its model, x every fold with --cv, x every seed with
    --seeds N (as Tune's grid gives them)."""
    units: list[dict[str, Any]] = [{"model": model} for model in config.models]
    if folds:
        units = [{**unit, "fold": fold} for unit in units for fold in range(folds)]
    if config.seeds > 1:
        units = [{**unit, "seed": seed} for unit in units for seed in config.seed_values()]
    return units


def _param_space(config: SweepConfig, folds: int) -> dict[str, Any]:
    """Tune's grid: every model, x every fold with --cv, x every seed with --seeds N."""
    space: dict[str, Any] = {"model": tune.grid_search(list(config.models))}
    if folds:
        space["fold"] = tune.grid_search(list(range(folds)))
    if config.seeds > 1:
        space["seed"] = tune.grid_search(config.seed_values())
    return space


class EpochASHA(ASHAScheduler):
    """ASHA that judges a trial's epochs only, never its final report.

    The final report (the best epoch's scores on every split) comes as the trial's Ray Train run
    ends; a stop decided on it killed the trial's actor while Train was still winding down: Train
    restarted the worker group, whose CPUs then stayed taken (seen: 0.49 of 2 CPUs lost per such
    trial, and later trials of the sweep waited on them).
    """

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        if is_final(result):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def _scheduler(config: SweepConfig):
    if config.scheduler == "asha":
        # Stops trials whose validation accuracy trails the others at the same epoch.
        return EpochASHA(
            metric=BEST_BY,
            mode="max",
            time_attr="training_iteration",
            max_t=config.longest_epochs() + 1,
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
