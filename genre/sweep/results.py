"""The results table: one row per trial, failed ones included, as Parquet, CSV and Markdown."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pandas as pd

from genre import reports
from genre.models import model_names
from genre.reports import is_final, metric_columns
from genre.run_folder import RunFolder
from genre.sweep.results_text import results_markdown
from genre.train.augment import describe

if TYPE_CHECKING:
    from ray.tune import Result

    from genre.trial.trainable import TrialSetup

TABLE_COLUMNS = [
    "model",
    "trial_id",
    "status",
    "error",
    "split_protocol",
    "epochs",
    reports.BEST_EPOCH,
    reports.STOPPED_EARLY,  # the last epoch of a trial that --patience ended; empty for the others
    reports.TRAIN_TIME_S,
    reports.SAMPLES_PER_S,
    reports.PARAMS,
    reports.AMP,
    reports.PRETRAINED,
    "lr",
    "batch_size",
    "dropout",
    "augment",
    "seed",
    "fold",
    "sampled",  # JSON: the values the trial's search drew ({} for a trial of the sweep's settings)
    *metric_columns(),
    "retries",
    reports.STARTED_AT,
    reports.FINISHED_AT,
    reports.CHECKPOINT,
    "dataset_manifest_sha256",
    "config",
]
# What a trial's Tune config holds besides its drawn values: its unit (model, fold, seed).
UNIT_KEYS = ("model", "fold", "seed")
HISTORY_COLUMNS = [
    "model",
    "trial_id",
    reports.EPOCH,
    reports.TRAIN_LOSS,
    reports.TRAIN_RUNNING_ACCURACY,
    *metric_columns(("val",)),
    reports.BEST_EPOCH,
    reports.EPOCH_TIME_S,
    reports.TRAIN_S,
    reports.VALIDATE_S,
    reports.REPORT_S,
]


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a frame with exactly TABLE_COLUMNS, in the study's model order."""
    frame = pd.DataFrame(rows)
    for column in TABLE_COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[TABLE_COLUMNS]


def write_results(
    run: RunFolder, table: pd.DataFrame, history: pd.DataFrame, header: dict[str, Any], appendix: str = ""
) -> dict[str, Path]:
    """Write results.{parquet,csv,md} and history.parquet into OUT; `appendix` ends results.md."""
    paths = run.results
    table.to_parquet(paths["parquet"], index=False)
    table.to_csv(paths["csv"], index=False)
    history.to_parquet(paths["history"], index=False)
    markdown = results_markdown(table, header)
    if appendix:
        markdown = f"{markdown.rstrip()}\n\n{appendix}"
    paths["markdown"].write_text(markdown, encoding="utf-8")
    return paths


def collect(
    grid: Iterable[Result], setup: TrialSetup, run: RunFolder, header: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per trial (failed and stopped ones included) and every trial's epochs, from Tune's results."""
    rows, histories = [], []
    for result in grid:
        sampled = result.config or {}
        metrics = result.metrics or {}
        trial_id = metrics.get(reports.TRIAL_ID) or trial_id_of(result.path)
        trial = setup.trial_config(sampled, trial_id)
        folder = setup.run_storage.trial(trial.model, trial_id)
        finished = is_final(metrics)
        row = {
            **{k: v for k, v in metrics.items() if k in TABLE_COLUMNS},
            "model": trial.model,
            "trial_id": trial_id,
            "status": "completed" if finished else "error" if result.error else "stopped",
            "error": failure_line(result.error) if result.error else "",
            "retries": max(folder.attempts() - 1, 0),
            "split_protocol": header["split_protocol"],
            "epochs": (metrics.get(reports.EPOCH, -1) + 1) if metrics else 0,
            "seed": trial.seed,
            "fold": trial.fold,
            "augment": describe(trial.augment),  # -1 outside a cross-validation (genre.sweep.summary.NO_FOLD)
            "sampled": sampled_json(sampled),
            "lr": trial.lr,
            "batch_size": trial.batch_size,
            "dropout": trial.dropout,
            "checkpoint": run.relative(metrics.get(reports.CHECKPOINT)),
            "dataset_manifest_sha256": header["manifest_sha256"],
            "config": config_json(trial.to_dict(), leave_out=("folder", "fault", "torch_threads")),
        }
        rows.append(row)
        # A finished trial's own record of its epochs; else what Tune saw (an interrupted trial
        # restarted from a checkpoint may miss epochs reported before the interruption).
        history = folder.read_history() if finished else None
        frame = pd.DataFrame(history) if history is not None else result.metrics_dataframe
        if frame is not None and not frame.empty:
            # Tune's record holds the final report too; the trial's own holds its epochs only.
            epochs = frame[frame.get(reports.FINAL, pd.Series(0, index=frame.index)).fillna(0) != 1].copy()
            epochs["model"], epochs["trial_id"] = row["model"], row["trial_id"]
            histories.append(epochs.reindex(columns=HISTORY_COLUMNS))
    order = {name: i for i, name in enumerate(model_names())}
    table = results_frame(rows)
    table = table.sort_values(by="model", key=lambda s: s.map(order)).reset_index(drop=True)
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame(columns=HISTORY_COLUMNS)
    return table, history


def trial_dirname(trial: Any) -> str:
    """Tune's folder of a trial: `<model>-<trial id>`, so the id can be read back from the path."""
    return f"{trial.config.get('model', 'trial')}-{trial.trial_id}"


def trial_id_of(path: str | None) -> str:
    """The trial id in a folder named by `trial_dirname` (a trial that never reported has no other)."""
    return PurePosixPath(path or "").name.rpartition("-")[2]


def failure_line(error: BaseException) -> str:
    """What went wrong in a trial, in one line: the innermost error of Ray's wrappers (Tune's task
    error, Ray Train's worker-group error), with what to do about running out of memory."""
    root = innermost_error(error)
    message = (str(root).strip().splitlines() or [""])[0]
    line = f"{type(root).__name__}: {message}"[:300]
    if _is_out_of_memory(root):
        line += " (lower --batch-size, or give each trial more memory: fewer trials per GPU)"
    return line


def _is_out_of_memory(error: BaseException) -> bool:
    """torch's OutOfMemoryError, known by name: the driver does not import torch for it (seconds)."""
    return any(
        kind.__name__ == "OutOfMemoryError" and kind.__module__.startswith("torch")
        for kind in type(error).__mro__
    )


def innermost_error(error: BaseException) -> BaseException:
    """Follow the chain: a Ray task error's cause, a worker group's first failed worker, a
    controller's failure, an exception's __cause__."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        failures = getattr(error, "worker_failures", None) or {}
        inner = (
            getattr(error, "cause", None)
            or (failures[min(failures)] if failures else None)
            or getattr(error, "controller_failure", None)
            or error.__cause__
        )
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def sampled_json(config: dict[str, Any]) -> str:
    """A trial's drawn values, from its Tune config: all but what its unit of the sweep fixes."""
    return config_json(config, leave_out=UNIT_KEYS)


def config_json(config: dict[str, Any], leave_out: Iterable[str] = ()) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in leave_out}, sort_keys=True, default=str)
