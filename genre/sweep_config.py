"""What `genre sweep` is asked to do (`SweepConfig`), checked before anything starts."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from data_pipeline.errors import UserInputError
from data_pipeline.split import SPLITS
from genre.config import PRETRAINED_MODES, TrainConfig

SCHEDULERS = ("fifo", "asha")
# The options that define a sweep, by name (what sweep.json records): `models`, TrainConfig's fields,
# and these of the sweep itself.
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig))
SWEEP_LEVEL = (
    "num_samples",
    "scheduler",
    "num_workers",
    "cpus_per_trial",
    "gpus_per_trial",
    "max_concurrent",
    "max_failures",
    "mlflow",
    "wandb",
)


def _all_models() -> tuple[str, ...]:
    from genre.models import model_names

    return tuple(model_names())


@dataclass(frozen=True)
class SweepConfig:
    """Everything `genre sweep` needs; the CLI builds it from its arguments."""

    data: Path
    out: Path
    models: tuple[str, ...] = field(default_factory=_all_models)
    train: TrainConfig = field(default_factory=TrainConfig)
    num_samples: int = 1
    scheduler: str = "fifo"
    num_workers: int = 1
    cpus_per_trial: float | None = None
    # None: auto (share Ray's GPUs among the trials; CPU when Ray has none).
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    # Restarts of a trial's workers from its last checkpoint after a failure (a lost node, a kill).
    max_failures: int = 1
    resume: bool = False
    address: str | None = None
    # Tune's and Train's run state and the best checkpoints: a path or an s3:// / gs:// URI.
    # None: OUT itself (or, when resuming, the storage the sweep in OUT was started with).
    storage: str | None = None
    # Experiment trackers (genre.trackers): an MLflow tracking URI, a Weights & Biases project.
    mlflow: str | None = None
    wandb: str | None = None
    # Hidden, for fault-injection tests: {model: genre.faults spec}.
    faults: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: dict[str, Any], **rest: Any) -> SweepConfig:
        """A sweep from its options by name (as `options()` gives them); defaults for those left out."""
        train = TrainConfig(**{n: options[n] for n in TRAIN_OPTIONS if n in options})
        models = tuple(options.get("models") or _all_models())
        return cls(models=models, train=train, **{n: options[n] for n in SWEEP_LEVEL if n in options}, **rest)

    def options(self) -> dict[str, Any]:
        """The options that define this sweep, by name: what sweep.json records for --resume."""
        return {
            "models": list(self.models),
            **{name: getattr(self.train, name) for name in TRAIN_OPTIONS},
            **{name: getattr(self, name) for name in SWEEP_LEVEL},
        }

    def check(self, manifest: dict[str, Any]) -> None:
        """Refuse, in one line, what cannot run on this dataset."""
        known = _all_models()
        unknown = [m for m in self.models if m not in known]
        if unknown:
            raise UserInputError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if not self.models:
            raise UserInputError("--models names no model")
        for split in SPLITS:
            if manifest["counts"][split]["segments"] == 0:
                raise UserInputError(
                    f"the dataset's {split} split is empty; a sweep needs train, val and test segments"
                )
        if self.train.pretrained not in PRETRAINED_MODES:
            raise UserInputError(f"--pretrained must be one of {', '.join(PRETRAINED_MODES)}")
        if self.scheduler not in SCHEDULERS:
            raise UserInputError(f"--scheduler must be one of {', '.join(SCHEDULERS)}")
        if self.num_samples < 1:
            raise UserInputError("--num-samples must be at least 1")
        from genre.trackers import check_trackers

        check_trackers(self.mlflow, self.wandb)
        if self.max_failures < 0:
            raise UserInputError(
                f"--max-failures must be 0 or more, not {self.max_failures} (a trial that fails forever "
                "would never end the sweep)"
            )
