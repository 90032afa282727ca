"""What `genre sweep` is asked to do (`SweepConfig`), checked before anything starts."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from data_pipeline.errors import UserInputError
from data_pipeline.split import SPLITS, fold_name
from genre.config import PRETRAINED_MODES, TrainConfig, option

SCHEDULERS = ("fifo", "asha")
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig))


def gpus_or_auto(text: str) -> float | None:
    """`--gpus-per-trial`'s value: a number, or auto (None)."""
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or auto, not {text!r}") from None


def _all_models() -> tuple[str, ...]:
    from genre.models import model_names

    return tuple(model_names())


@dataclass(frozen=True)
class SweepConfig:
    """Everything `genre sweep` needs; the CLI builds it from its arguments."""

    data: str | Path  # a path, or an s3:// or gs:// URI
    out: Path
    models: tuple[str, ...] = field(default_factory=_all_models)
    train: TrainConfig = field(default_factory=TrainConfig)
    # A field whose metadata holds a flag's help is an option: it defines the sweep (sweep.yaml records
    # it) and is a `genre sweep` flag (genre.cli.option_flags, as TrainConfig's fields are); the rest say
    # where the sweep runs. The options' order is sweep.yaml's.
    num_samples: int = option(
        1,
        "configurations sampled per model (lr, batch size, dropout; default {default})",
        "models and search",
    )
    scheduler: str = option(
        "fifo",
        "asha stops trials whose validation accuracy trails early (default {default})",
        "models and search",
        choices=SCHEDULERS,
    )
    num_workers: int = option(1, "Ray Train workers per trial (default {default})", "resources")
    cpus_per_trial: float | None = option(
        None, "CPUs for each trial's workers (default: shared out)", "resources"
    )
    # None: auto (share Ray's GPUs among the trials; CPU when Ray has none).
    gpus_per_trial: float | None = option(
        None,
        "GPUs per trial; 0.5 packs two per GPU; 0 trains on CPU (default auto: the trials share "
        "Ray's GPUs, or the CPU when Ray has none)",
        "resources",
        type=gpus_or_auto,
        metavar="N|auto",
    )
    max_concurrent: int | None = option(None, "trials at once (default: as many as fit)", "resources")
    # Restarts after a lost node or a kill, say.
    max_failures: int = option(
        1,
        "restarts of a trial's workers from its last checkpoint after a failure (default {default})",
        "resources",
    )
    # Experiment trackers (genre.sweep.trackers).
    mlflow: str | None = option(
        None,
        "log every trial's metrics to this MLflow tracking URI (a server, or "
        "sqlite:///mlflow.db); needs pip install 'genre-ray[mlflow]'",
        "tracking",
        metavar="URI",
    )
    wandb: str | None = option(
        None,
        "log every trial's metrics to this Weights & Biases project; needs pip install 'genre-ray[wandb]'",
        "tracking",
        metavar="PROJECT",
    )
    # Folds: data_pipeline.split.cv_splits.
    cv: bool = option(
        False,
        "cross-validation on a dataset prepared with --folds K: K trials per model, trial k "
        "testing on fold k, validating on the next, training on the rest",
        "models and search",
    )
    seeds: int = option(
        1,
        "run every trial with N seeds (--seed, --seed+1, ...), for a spread of each score "
        "(default {default})",
        "models and search",
        metavar="N",
    )
    resume: bool = False
    address: str | None = None
    # Tune's and Train's run state and the best checkpoints: a path or an s3:// / gs:// URI.
    # None: OUT itself (or, when resuming, the storage the sweep in OUT was started with).
    storage: str | None = None
    # Hidden, for fault-injection tests: {model: genre.train.faults spec}.
    faults: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: dict[str, Any], **rest: Any) -> SweepConfig:
        """A sweep from its options by name (as `options()` gives them); defaults for those left out."""
        train = TrainConfig(**{n: options[n] for n in TRAIN_OPTIONS if n in options})
        models = tuple(options.get("models") or _all_models())
        return cls(models=models, train=train, **{n: options[n] for n in SWEEP_LEVEL if n in options}, **rest)

    def options(self) -> dict[str, Any]:
        """The options that define this sweep, by name: what sweep.yaml records for --resume."""
        return {
            "models": list(self.models),
            **{name: getattr(self.train, name) for name in TRAIN_OPTIONS},
            **{name: getattr(self, name) for name in SWEEP_LEVEL},
        }

    def seed_values(self) -> list[int]:
        """The seeds every configuration runs with: --seed, then the next ones for --seeds N."""
        return [self.train.seed + i for i in range(self.seeds)]

    def trial_count(self, manifest: dict[str, Any]) -> int:
        """Trials in the sweep: models x samples x folds (with --cv) x seeds."""
        folds = dataset_folds(manifest) if self.cv else 1
        return len(self.models) * self.num_samples * folds * self.seeds

    def check(self, manifest: dict[str, Any]) -> None:
        """Refuse, in one line, what cannot run on this dataset."""
        known = _all_models()
        unknown = [m for m in self.models if m not in known]
        if unknown:
            raise UserInputError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if not self.models:
            raise UserInputError("--models names no model")
        check_distinct_models(self.models)
        self._check_protocol(manifest)
        for group in dataset_groups(manifest):
            if manifest["counts"][group]["segments"] == 0:
                raise UserInputError(
                    f"the dataset's {group} split is empty; a sweep needs train, val and test segments"
                )
        if self.train.pretrained not in PRETRAINED_MODES:
            raise UserInputError(f"--pretrained must be one of {', '.join(PRETRAINED_MODES)}")
        if self.scheduler not in SCHEDULERS:
            raise UserInputError(f"--scheduler must be one of {', '.join(SCHEDULERS)}")
        if self.num_samples < 1:
            raise UserInputError("--num-samples must be at least 1")
        from genre.sweep.trackers import check_trackers

        check_trackers(self.mlflow, self.wandb)
        if self.seeds < 1:
            raise UserInputError(f"--seeds must be at least 1, not {self.seeds}")
        if self.seeds > 1 and self.scheduler == "asha":
            raise UserInputError(
                "--scheduler asha stops some seeds of a model early, so its mean over seeds would not be "
                "comparable: use fifo with --seeds"
            )
        self._check_augment_fits(manifest["features"])
        if self.train.random_offsets and dataset_train_offsets(manifest) <= 1:
            raise UserInputError(
                "--random-offsets draws among train windows between the grid's, which DATA does not keep: "
                "prepare it with --train-hop (e.g. 0.5)"
            )
        if self.max_failures < 0:
            raise UserInputError(
                f"--max-failures must be 0 or more, not {self.max_failures} (a trial that fails forever "
                "would never end the sweep)"
            )

    def _check_augment_fits(self, features: dict[str, Any]) -> None:
        augment = self.train.augmentation()
        for flag, width, size, unit in (
            ("--freq-mask", augment.freq_mask, features["n_mels"], "mel bands"),
            ("--time-mask", augment.time_mask, features["frames"], "frames"),
        ):
            if width > size:
                raise UserInputError(f"{flag} {width} is wider than the dataset's windows: {size} {unit}")

    def _check_protocol(self, manifest: dict[str, Any]) -> None:
        folds = dataset_folds(manifest)
        if self.cv and not folds:
            raise UserInputError(
                "--cv needs a dataset prepared in folds (genre prepare SRC DATA --folds 5); this one has "
                "a fixed train/val/test split"
            )
        if folds and not self.cv:
            raise UserInputError(
                f"DATA is prepared in {folds} folds for cross-validation, with no fixed test split: "
                "run the sweep with --cv"
            )
        if self.cv and self.scheduler == "asha":
            raise UserInputError(
                "--scheduler asha stops trials early, so some folds of a model would end unfinished and "
                "its mean over folds would not be comparable: use fifo with --cv"
            )
        if self.cv and self.num_samples > 1:
            raise UserInputError(
                "--num-samples samples each trial's configuration apart, so the folds of a model would "
                "train with different settings: with --cv, set --lr, --batch-size, --dropout instead"
            )


# The options that define a sweep, by name (what sweep.yaml records): `models`, TrainConfig's fields
# (TRAIN_OPTIONS), and these of the sweep itself.
SWEEP_LEVEL = tuple(f.name for f in fields(SweepConfig) if "help" in f.metadata)


def check_distinct_models(models: Sequence[str]) -> None:
    """Refuse a model named twice: its trials would be one trial run twice, counted as two."""
    repeated = sorted(name for name, times in Counter(models).items() if times > 1)
    if repeated:
        raise UserInputError(
            f"--models names {', '.join(repeated)} more than once; each model is one configuration "
            "(repeat its trials with --seeds N, or --num-samples N to sample its settings)"
        )


def dataset_folds(manifest: dict[str, Any]) -> int:
    """K for a dataset prepared with --folds K; 0 for one with a fixed train/val/test split."""
    return int(manifest["split"].get("folds") or 0)


def dataset_train_offsets(manifest: dict[str, Any]) -> int:
    """Windows per grid slot of the train tracks (prepare --train-hop); 1 for the grid alone."""
    return int(manifest["split"].get("train_offsets") or 1)


def dataset_groups(manifest: dict[str, Any]) -> list[str]:
    """The dataset's shard groups: its splits, or its folds (data_pipeline.split.fold_name)."""
    folds = dataset_folds(manifest)
    return [fold_name(k) for k in range(folds)] if folds else list(SPLITS)
