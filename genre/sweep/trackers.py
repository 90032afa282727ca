"""Experiment trackers for a sweep: MLflow and Weights & Biases through Ray Tune's own logger callbacks.

Tune calls them on the driver for every trial's start, report and end, so only the machine that runs
`genre sweep` needs the tracker's package; each trial becomes one tracker run holding every epoch's
metrics, named after the trial and tagged with the sweep's OUT and options.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from data_pipeline.errors import UserInputError

# MLflow experiment when MLFLOW_EXPERIMENT_NAME is not set: every genre sweep's trials side by side,
# told apart by their `genre.out` tag.
MLFLOW_EXPERIMENT = "genre"


def check_trackers(mlflow: str | None, wandb: str | None) -> None:
    """Refuse a tracker whose package is not installed, or a tracking URI MLflow refuses, before anything
    runs."""
    for option, value, package, extra in (
        ("--mlflow", mlflow, "mlflow", "mlflow"),
        ("--wandb", wandb, "wandb", "wandb"),
    ):
        if value and importlib.util.find_spec(package) is None:
            raise UserInputError(
                f"{option} needs the {package} package, which is not installed: "
                f"pip install 'genre-ray[{extra}]'"
            )
    if mlflow:
        check_mlflow_store(mlflow)


def check_mlflow_store(uri: str) -> None:
    """Refuse a tracking URI that MLflow itself refuses, in one line rather than a trial's traceback.

    (MLflow 3 refuses its file store, `file:///path` or a bare path, unless MLFLOW_ALLOW_FILE_STORE=true.)
    """
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri)
    except Exception as error:  # MLflow's own exceptions, for a URI it cannot use
        reason = str(error).split(". ")[0].splitlines()[0]
        hint = " (or set MLFLOW_ALLOW_FILE_STORE=true)" if "filesystem" in reason else ""
        raise UserInputError(f"--mlflow {uri}: {reason}{hint}") from None


def tracker_callbacks(mlflow: str | None, wandb: str | None, tags: dict[str, Any]) -> list:
    """Ray Tune logger callbacks for the trackers asked for (checked by `check_trackers`); `tags` describe
    the sweep."""
    callbacks = []
    if mlflow:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=mlflow,
                experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", MLFLOW_EXPERIMENT),
                tags={f"genre.{name}": _tag(value) for name, value in tags.items()},
            )
        )
    if wandb:
        from ray.air.integrations.wandb import WandbLoggerCallback

        # The group is the sweep: W&B shows its trials together. Credentials and offline mode are
        # wandb's own (WANDB_API_KEY or `wandb login`; WANDB_MODE=offline).
        callbacks.append(WandbLoggerCallback(project=wandb, group=_tag(tags.get("out", "genre"))))
    return callbacks


def _tag(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)
