"""What `genre sweep` is asked to do (`SweepConfig`), checked before anything starts."""

from __future__ import annotations

import argparse
import math
import typing
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from data_pipeline.errors import UserInputError
from data_pipeline.split import SPLITS, fold_name
from genre.config import PRETRAINED_MODES, TrainConfig, option

SCHEDULERS = ("fifo", "asha")
# How each model's --num-samples configurations are chosen (genre.sweep.search).
SEARCHES = ("random", "optuna", "hyperopt")
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig))
# A search space's distributions, as a `search:` section writes them: `lr: {loguniform: [1.0e-4, 1.0e-2]}`.
# randint's high is excluded, as in Tune.
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
# TrainConfig's settings that a trial cannot take from a search space, and why; every other one can.
NOT_SEARCHABLE = {
    "epochs": "--epochs is every trial's budget (and ASHA's)",
    "seed": "each configuration's seed is --seed (and --seeds N)",
    "pretrained": "whether a model starts from ImageNet weights is decided before the trials",
    "weights_dir": "whether a model starts from ImageNet weights is decided before the trials",
    "train_in_memory_mib": "whether the workers hold the train split is decided before the trials",
}


# TrainConfig's settings that one model's trials cannot set apart from the sweep's (per_model), and why.
NOT_PER_MODEL = {
    "seed": "each configuration's seed is --seed (and --seeds N), the same for every model",
    "pretrained": "set --pretrained for the sweep; a model without ImageNet weights trains from scratch",
    "weights_dir": "one folder of ImageNet weights serves every model",
    "train_in_memory_mib": "whether the workers hold the train split is decided once, for the sweep",
}


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


def _yaml_mapping(text: str, shape: str) -> dict[str, Any]:
    """A flag's YAML (or JSON) mapping; anything else is argparse's error, naming the `shape` it takes."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"not YAML: {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a mapping of {shape}, not {text!r}")
    return value


def search_space_text(text: str) -> dict[str, Any]:
    """`--search-space`'s value: a YAML (or JSON) mapping, checked by `parse_search_space`."""
    return _yaml_mapping(text, "setting: {distribution: [...]}")


def per_model_text(text: str) -> dict[str, Any]:
    """`--per-model`'s value: a YAML (or JSON) mapping, checked by `parse_per_model`."""
    return _yaml_mapping(text, "model: {setting: value}")


def parse_per_model(raw: Any) -> dict[str, dict[str, Any]]:
    """Per-model settings as written (`{vgg11: {epochs: 2, lr: 1.0e-4}}`) in their one form: registered
    models, TrainConfig settings, values of the setting's type. Refuses, in one line, what is not."""
    example = "e.g. {vgg11: {epochs: 2, lr: 1.0e-4}}"
    if not isinstance(raw, dict):
        raise UserInputError(f"per_model: a mapping of model: {{setting: value}}, {example}")
    known = _all_models()
    settings_of: dict[str, dict[str, Any]] = {}
    for model, settings in raw.items():
        if model not in known:
            raise UserInputError(f"per_model: unknown model {model!r}; known: {', '.join(known)}")
        if not isinstance(settings, dict) or not settings:
            raise UserInputError(f"per_model: {model}: a mapping of setting: value, {example}")
        settings_of[model] = {}
        for key, value in settings.items():
            name = str(key).strip().replace("-", "_")
            where = f"per_model: {model}: {name}"
            if name in NOT_PER_MODEL:
                raise UserInputError(f"{where} cannot be set for one model: {NOT_PER_MODEL[name]}")
            if name not in TRAIN_OPTIONS:
                settable = [n for n in TRAIN_OPTIONS if n not in NOT_PER_MODEL]
                raise UserInputError(f"{where}: unknown setting; settable: {', '.join(settable)}")
            if value is None:
                settings_of[model][name] = None  # the model's own default, as the flag's absence
                continue
            settings_of[model][name] = _as_setting(where, value, _setting_type(name), name)
    return settings_of


def searchable_settings() -> tuple[str, ...]:
    """The settings a search space may name: TrainConfig's fields but NOT_SEARCHABLE's."""
    return tuple(name for name in TRAIN_OPTIONS if name not in NOT_SEARCHABLE)


def parse_search_space(raw: Any) -> dict[str, dict[str, list[Any]]]:
    """A search space as written (`{lr: {loguniform: [1e-4, 1e-2]}}`) in its one form: each setting's
    distribution and its values as the setting's type. Refuses, in one line naming the setting, what is
    not one."""
    if not isinstance(raw, dict) or not raw:
        raise UserInputError(
            "search: a mapping of setting: {distribution: [...]}, e.g. {lr: {loguniform: [1.0e-4, 1.0e-2]}}"
        )
    searchable = searchable_settings()
    space = {}
    for key, spec in raw.items():
        name = str(key).strip().replace("-", "_")
        if name in NOT_SEARCHABLE:
            raise UserInputError(f"search: {name} cannot be searched: {NOT_SEARCHABLE[name]}")
        if name not in searchable:
            raise UserInputError(f"search: unknown setting {name!r}; searchable: {', '.join(searchable)}")
        if _setting_type(name) not in (bool, int, float, str):
            raise UserInputError(f"search: {name} cannot be searched: it is not a single value")
        space[name] = _distribution(name, spec)
    return space


def _distribution(name: str, spec: Any) -> dict[str, list[Any]]:
    where = f"search: {name}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise UserInputError(f"{where}: one distribution, e.g. {{uniform: [0.1, 0.5]}}, not {spec!r}")
    ((kind, values),) = spec.items()
    if kind not in DISTRIBUTIONS:
        raise UserInputError(f"{where}: unknown distribution {kind!r}; one of {', '.join(DISTRIBUTIONS)}")
    values = list(values) if isinstance(values, list | tuple) else [values]
    kind_of_setting = _setting_type(name)
    if kind == "choice":
        if not values:
            raise UserInputError(f"{where}: choice needs at least one value")
        return {kind: [_as_setting(where, value, kind_of_setting, name) for value in values]}
    if len(values) != 2:
        raise UserInputError(f"{where}: {kind} takes [low, high], not {values!r}")
    if kind == "randint":
        if kind_of_setting not in (int, float):
            raise UserInputError(f"{where}: {name} is not a number: use choice")
        low, high = (_as_setting(where, value, int, name) for value in values)
    else:
        if kind_of_setting is not float:
            use = "randint or choice" if kind_of_setting is int else "choice"
            raise UserInputError(f"{where}: {kind} draws fractions, which {name} does not take: use {use}")
        low, high = (_as_setting(where, value, float, name) for value in values)
    if not low < high:
        raise UserInputError(f"{where}: {kind} needs low < high, not [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise UserInputError(f"{where}: loguniform needs low > 0, not {low}")
    return {kind: [low, high]}


def _setting_type(name: str) -> type:
    """A TrainConfig field's type, without its None: int, float, str or bool."""
    annotation = typing.get_type_hints(TrainConfig)[name]
    types = [arg for arg in typing.get_args(annotation) if arg is not type(None)] or [annotation]
    return types[0]


def _as_setting(where: str, value: Any, kind: type, name: str) -> Any:
    """`value` as a `kind` setting (YAML reads 1e-4 as text: a number still), else a one-line refusal."""
    choices = next(f.metadata.get("choices") for f in fields(TrainConfig) if f.name == name)
    if kind is str and isinstance(value, bool):
        # YAML reads off, no, on and yes as booleans: back to the word that one of the choices spells.
        words = ("on", "yes") if value else ("off", "no")
        value = next((word for word in words if word in (choices or ())), value)
    converted = None
    if isinstance(value, bool) != (kind is bool):  # YAML's true and false: a switch's, which takes no other
        pass
    elif kind is float:
        converted = _number(value)
    elif kind is int:
        converted = value if isinstance(value, int) else int(value) if _is_whole(value) else None
    elif isinstance(value, kind) and (not choices or value in choices):
        converted = value
    if converted is not None:
        return converted
    takes = {float: "a number", int: "a whole number", bool: "true or false"}.get(kind, "text")
    takes = f"one of {', '.join(choices)}" if choices else takes
    raise UserInputError(f"{where}: {value!r} is not a value {name} takes ({takes})")


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _is_whole(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


def space_extremes(distribution: dict[str, list[Any]]) -> list[Any]:
    """The values a distribution can reach at its ends (every one of a choice): what a check tries."""
    ((kind, values),) = distribution.items()
    if kind == "randint":
        return [values[0], values[1] - 1]
    return list(values)


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
        "configurations per model, from --search-space (else each model's own: lr, batch size, "
        "dropout) (default {default})",
        "models and search",
    )
    search: str = option(
        "random",
        "how each model's configurations are chosen: random (the default), optuna or hyperopt (TPE, "
        "each model searched apart; pip install 'genre-ray[optuna]' or 'genre-ray[hyperopt]')",
        "models and search",
        choices=SEARCHES,
    )
    # Canonical (parse_search_space) once built; None: each model's own space when there is a search.
    search_space: Mapping[str, Any] | None = option(
        None,
        "distributions over trial settings, as YAML: '{{lr: {{loguniform: [1.0e-4, 1.0e-2]}}, batch_size: "
        "{{choice: [16, 32]}}}}' (loguniform, uniform, randint, choice); a search: section in --config",
        "models and search",
        type=search_space_text,
        metavar="YAML",
    )
    # Canonical (parse_per_model) once built: {model: {setting: value}} over the sweep's settings.
    per_model: Mapping[str, Mapping[str, Any]] | None = option(
        None,
        "settings of one model's trials apart from the sweep's, as YAML: '{{vgg11: {{epochs: 2, lr: "
        "1.0e-4}}}}' (any training setting but the seed and the pretrained weights'); a search space's "
        "values win over them; a per_model: section in --config",
        "models and search",
        type=per_model_text,
        metavar="YAML",
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

    def __post_init__(self) -> None:
        if self.search_space is not None:
            object.__setattr__(self, "search_space", parse_search_space(self.search_space))
        if self.per_model is not None:
            object.__setattr__(self, "per_model", parse_per_model(self.per_model) or None)
            for model in self.per_model or {}:
                try:
                    self.train_for(model)
                except ValueError as error:  # TrainConfig's own checks, over the sweep's other settings
                    raise UserInputError(f"per_model: {model}: {error}") from None

    def train_for(self, model: str) -> TrainConfig:
        """The settings `model`'s trials train with: the sweep's, with its per_model ones over them."""
        return self.train.replace(**(self.per_model or {}).get(model, {}))

    def longest_epochs(self) -> int:
        """The most epochs any model's trials train (ASHA's budget)."""
        return max(self.train_for(model).epochs for model in self.models)

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

    def searches(self) -> bool:
        """Whether each model's trials take values from a search space (else: the sweep's settings)."""
        return self.search_space is not None or self.num_samples > 1 or self.search != "random"

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
        others = sorted(set(self.per_model or {}) - set(self.models))
        if others:
            raise UserInputError(
                f"per_model: {', '.join(others)} is not among the sweep's models ({', '.join(self.models)})"
            )
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
        if self.search not in SEARCHES:
            raise UserInputError(f"--search must be one of {', '.join(SEARCHES)}")
        if self.search_space is not None:
            for model in self.models:
                self.check_space(self.search_space, manifest, self.train_for(model))
        from genre.sweep.search import check_search_package
        from genre.sweep.trackers import check_trackers

        check_search_package(self.search)
        check_trackers(self.mlflow, self.wandb)
        if self.seeds < 1:
            raise UserInputError(f"--seeds must be at least 1, not {self.seeds}")
        if self.seeds > 1 and self.scheduler == "asha":
            raise UserInputError(
                "--scheduler asha stops some seeds of a model early, so its mean over seeds would not be "
                "comparable: use fifo with --seeds"
            )
        for model in self.models:
            try:
                self._check_train(self.train_for(model), manifest)
            except UserInputError as error:
                if model not in (self.per_model or {}):
                    raise
                raise UserInputError(f"per_model: {model}: {error}") from None
        if self.max_failures < 0:
            raise UserInputError(
                f"--max-failures must be 0 or more, not {self.max_failures} (a trial that fails forever "
                "would never end the sweep)"
            )

    def check_space(
        self, space: dict[str, dict[str, list[Any]]], manifest: dict[str, Any], train: TrainConfig
    ) -> None:
        """Refuse a search space (parsed) that could give a trial a setting the sweep would refuse: each
        setting tried at its distribution's ends, over the others of `train` (a model's)."""
        for name, distribution in space.items():
            for value in space_extremes(distribution):
                try:
                    self._check_train(train.replace(**{name: value}), manifest)
                except (ValueError, UserInputError) as error:
                    raise UserInputError(f"search: {name}: {value!r} is refused: {error}") from None

    def _check_train(self, train: TrainConfig, manifest: dict[str, Any]) -> None:
        self._check_augment_fits(train, manifest["features"])
        if train.random_offsets and dataset_train_offsets(manifest) <= 1:
            raise UserInputError(
                "--random-offsets draws among train windows between the grid's, which DATA does not keep: "
                "prepare it with --train-hop (e.g. 0.5)"
            )

    @staticmethod
    def _check_augment_fits(train: TrainConfig, features: dict[str, Any]) -> None:
        augment = train.augmentation()
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
        if (self.cv or self.seeds > 1) and self.searches():
            what = "--search-space" if self.search_space else "--search"
            what = "--num-samples" if self.num_samples > 1 else what
            repeats, flag = ("folds", "--cv") if self.cv else ("seeds", "--seeds")
            raise UserInputError(
                f"{what} samples each trial's configuration apart, so the {repeats} of a model would "
                f"train with different settings: with {flag}, set --lr, --batch-size, --dropout instead"
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
