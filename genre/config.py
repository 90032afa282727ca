"""Typed configuration of one training run; the CLI and the sweep build it, the workers read it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genre.train.augment import BUNDLES as AUGMENT_BUNDLES
from genre.train.augment import Augment, bundle

AMP_MODES = ("auto", "off", "bf16", "fp16")
PRETRAINED_MODES = ("auto", "yes", "no")
# The training recipe's choices (genre.train.recipe builds them); the first of each is the study's.
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "onecycle")
# Windows per forward pass when nobody says, for validation, `genre predict` and `genre evaluate`
# alike: a GPU wants large batches to be busy (256 windows of 128 x 130 log-mels are 8 MiB of float16
# input); on a CPU, small batches of the study's input score the most windows a second
# (bench/window_batch.py; bench/results/window_batch.md).
WINDOW_BATCH = {"cuda": 256, "cpu": 8}
# The validation score that picks a trial's best epoch, ASHA's metric and a run's best trial.
BEST_BY = "val_segment_accuracy"


def option(default: Any, help: str, group: str, **argparse_keywords: Any) -> Any:
    """A config field that is also a `genre sweep` flag (genre.cli.option_flags builds it): `help` is its
    help text ("{default}" stands for the default), `group` its --help section, and `argparse_keywords`
    (metavar, choices, type) what argparse needs beyond the field's annotation."""
    return dataclasses.field(default=default, metadata={"help": help, "group": group, **argparse_keywords})


@dataclass(frozen=True)
class TrainConfig:
    """How a sweep's trials train: the study's settings (15 epochs, Adam, batch 16) by default.

    `lr` and `dropout` left as None take each model's own default from the registry.
    """

    # Each field is a `genre sweep` flag (`option`).
    epochs: int = option(15, "training epochs (default {default})", "training")
    batch_size: int = option(16, "batch size (default {default})", "training")
    lr: float | None = option(None, "learning rate (default: each model's, 1e-4)", "training")
    dropout: float | None = option(None, "dropout (default: each model's)", "training")
    amp: str = option(
        "auto",
        "mixed precision: auto (on for EfficientNet and VGG; the default), off, bf16, fp16",
        "training",
        choices=AMP_MODES,
    )
    pretrained: str = option(
        "auto",
        "ImageNet weights for EfficientNet and VGG: auto (when they can be had; the default), yes, no",
        "training",
        choices=PRETRAINED_MODES,
    )
    weights_dir: str | None = option(None, "folder holding ImageNet weight files", "training", metavar="DIR")
    seed: int = option(0, "seeds weights, shuffling and sampling (default {default})", "training")
    # The recipe (genre.train.recipe): the study's Adam at a constant rate, for every epoch, by default.
    optimizer: str = option(
        "adam",
        "adam (the default) or adamw (decoupled weight decay)",
        "training",
        choices=OPTIMIZERS,
    )
    weight_decay: float = option(
        0.0,
        "weight decay: adamw's decoupled one, adam's L2 term (default {default})",
        "training",
        metavar="DECAY",
    )
    lr_schedule: str = option(
        "constant",
        "the learning rate over the batches: constant (the default), cosine (down to 0 by the last "
        "batch), onecycle (up to --lr and down again, torch's OneCycleLR)",
        "training",
        choices=LR_SCHEDULES,
    )
    warmup_epochs: int = option(
        0,
        "epochs of linear warm-up from 0 to --lr, batch by batch (constant, cosine); onecycle's rise "
        "(0.3 of the run when 0) (default {default})",
        "training",
        metavar="N",
    )
    # Scored by BEST_BY, the score that picks the best epoch.
    patience: int = option(
        0,
        "end a trial when this many epochs bring no better validation accuracy (default 0: train "
        "every epoch)",
        "training",
        metavar="N",
    )
    grad_clip: float | None = option(
        None, "clip the gradients' total norm to this (default: no clipping)", "training", metavar="NORM"
    )
    label_smoothing: float = option(
        0.0, "cross-entropy's label smoothing (default {default})", "training", metavar="EPS"
    )
    # Held, a worker's share is shuffled whole every epoch; streamed, through the shuffle buffer.
    train_in_memory_mib: int = option(
        2048,
        "hold a worker's share of the train split in memory (GPU memory on a GPU) when it is at "
        "most this size; larger ones stream from the shards every epoch; 0 always streams "
        "(default {default})",
        "data loading",
        metavar="MIB",
    )
    shuffle_buffer: int = option(
        2048,
        "rows held for shuffling a streamed train split (default {default})",
        "data loading",
        metavar="ROWS",
    )
    # genre.train.augment: a named bundle ("study": none, as the study trained), whose single values the
    # four options after it override when set.
    augment: str = option(
        "study",
        "augment the training batches: study (none, the default), light (SpecAugment masks), "
        "strong (masks, mixup, gain); the options below change single values of the bundle",
        "augmentation",
        choices=AUGMENT_BUNDLES,
    )
    freq_mask: int | None = option(None, "widest frequency mask, mel bands", "augmentation", metavar="BANDS")
    time_mask: int | None = option(None, "widest time mask, frames", "augmentation", metavar="FRAMES")
    mixup: float | None = option(
        None, "mixup with weights from Beta(ALPHA, ALPHA)", "augmentation", metavar="ALPHA"
    )
    gain_db: float | None = option(
        None, "random gain: a window's floor rises by up to DB dB", "augmentation", metavar="DB"
    )
    random_offsets: bool = option(
        False,
        "each epoch, one train window per 3 s slot drawn at a random offset within the track (a "
        "dataset prepared with --train-hop)",
        "augmentation",
    )

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if self.train_in_memory_mib < 0:
            raise ValueError(f"--train-in-memory-mib cannot be negative, got {self.train_in_memory_mib}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        self._check_recipe()
        self.augmentation()  # a bad bundle name or value is refused here, before anything runs

    def _check_recipe(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"--weight-decay cannot be negative, got {self.weight_decay}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"--warmup-epochs must be at least 0 and less than --epochs ({self.epochs}), "
                f"got {self.warmup_epochs}"
            )
        if self.patience < 0:
            raise ValueError(f"--patience cannot be negative (0 turns it off), got {self.patience}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"--grad-clip must be positive, got {self.grad_clip}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")

    def augmentation(self) -> Augment:
        """What each trial does to its training batches: the bundle, with the options set over it."""
        overrides = {
            "freq_mask": self.freq_mask,
            "time_mask": self.time_mask,
            "mixup_alpha": self.mixup,
            "gain_db": self.gain_db,
        }
        chosen = bundle(self.augment)
        return dataclasses.replace(chosen, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelDefaults:
    """A model's own learning rate and dropout (from the registry: `ModelSpec.defaults`)."""

    lr: float
    dropout: float


@dataclass(frozen=True)
class TrialConfig:
    """One trial's settings with every default filled in, worked out once (`resolve`): what its
    workers train with, what its results row and its checkpoint record."""

    model: str
    epochs: int
    batch_size: int
    lr: float
    dropout: float
    amp: str  # as asked ("auto" is settled per device by the worker)
    pretrained: str  # "yes" or "no", decided by the driver where the user sees why
    weights_dir: str | None
    seed: int
    train_in_memory_mib: int
    shuffle_buffer: int
    # The recipe, as TrainConfig's (defaults: the study's, as checkpoints written before it trained).
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    patience: int = 0
    grad_clip: float | None = None
    label_smoothing: float = 0.0
    # What the trial does to its training batches (genre.train.augment.Augment.to_dict()); empty: nothing.
    augment: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Windows per grid slot of the dataset's train tracks (prepare --train-hop); 1: the grid alone.
    train_offsets: int = 1
    random_offsets: bool = False  # each epoch a window per slot drawn among them (TrainConfig's)
    # Cross-validation: the fold this trial tests on, of `folds` (-1 and 0: not a cross-validation trial).
    fold: int = -1
    folds: int = 0
    # The trial's folder in the run storage, without credentials (a record: workers are handed the
    # folder itself): its best checkpoint and attempt count.
    folder: str = ""
    torch_threads: int = 1
    # Hidden, for fault-injection tests: a genre.train.faults spec (KIND@EPOCH:STEP[:PATH]) or "".
    fault: str = ""

    @classmethod
    def resolve(
        cls,
        train: TrainConfig,
        model: str,
        defaults: ModelDefaults,
        sampled: dict[str, Any] | None = None,
        **run: Any,
    ) -> TrialConfig:
        """`train` for `model`: the model's defaults where `train` has none, then the values Tune
        sampled for this trial: any TrainConfig setting (a search space's, the seed), and the fold."""
        sampled = sampled or {}
        # Through TrainConfig, so a sampled value is checked as a flag's is and the augmentation options
        # resolve as one.
        train = train.replace(**{k: v for k, v in sampled.items() if k in _TRAIN_FIELDS})
        values = {name: getattr(train, name) for name in _SHARED}
        values["lr"] = train.lr or defaults.lr
        values["dropout"] = defaults.dropout if train.dropout is None else train.dropout
        if "fold" in sampled:
            values["fold"] = sampled["fold"]
        augment = train.augmentation()
        values["augment"] = augment.to_dict() if augment.active else {}
        return cls(model=model, **{**values, **run})

    def data_view(self) -> dict[str, str]:
        """{split: the dataset's shard groups it reads}, comma-separated: the dataset's own splits, or
        this trial's folds in a cross-validation (data_pipeline.split.cv_splits)."""
        from data_pipeline.split import SPLITS, cv_splits

        if self.folds and self.fold >= 0:
            return cv_splits(self.fold, self.folds)
        return {split: split for split in SPLITS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# TrainConfig's fields that a trial takes as they are.
# (The learning rate and dropout are each model's unless set; the augmentation options resolve into one.)
_AUGMENT_OPTIONS = ("augment", "freq_mask", "time_mask", "mixup", "gain_db")
_TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
_SHARED = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("lr", "dropout", *_AUGMENT_OPTIONS)
)


# The demo's epochs per model, set from learning curves on its own collection (bench/results/demo.md):
# the small CNNs learn from scratch in a few seconds an epoch, so they train until they have; the
# ImageNet-sized networks learn little in any number that fits the demo's minutes on a CPU, so they
# train one or two epochs to show that they run.
DEMO_EPOCHS = {
    "cnn3": 20,
    "cnn4": 10,
    "cnn4_gru": 8,
    "efficientnet_b0": 2,
    "efficientnet_b0_gru": 2,
    "vgg11": 1,
}
DEMO_EPOCHS_ELSE = 4  # a model registered after these
# A model's own peak rate where the demo's 3e-3 keeps it at chance: the GRU over cnn4's blocks learns
# at 1e-3 (bench/results/demo.md).
DEMO_LR = {"cnn4_gru": 1e-3}


@dataclass(frozen=True)
class DemoConfig:
    """`genre demo`: sized for a few minutes on two CPU cores, with an input the CNNs learn from in that."""

    out: Path = Path("genre-demo")
    tracks_per_genre: int = 20
    seconds: float = 12.0
    # 3 s windows of 32 mel bands x 65 hops of 1024 samples: a sixteenth of the study-like 128 x 130, so
    # six models train a few epochs each on two cores.
    n_mels: int = 32
    hop_length: int = 1024
    # None: each model's DEMO_EPOCHS; a number: every model's.
    epochs: int | None = None
    # From scratch: one cycle up to a rate well above the study's 1e-4 and back down, with AdamW's
    # decoupled weight decay.
    lr: float = 3e-3
    lr_schedule: str = "onecycle"
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    batch_size: int = 16
    models: tuple[str, ...] = ()  # empty: every registered model
    seed: int = 0
    address: str | None = None

    def per_model(self, models: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each model's settings apart from the demo's: its epochs where they are not the longest, its
        DEMO_LR."""
        longest = max(self.epochs_of(model) for model in models)
        settings: dict[str, dict[str, Any]] = {}
        for model in models:
            epochs = self.epochs_of(model)
            own: dict[str, Any] = {"epochs": epochs} if epochs != longest else {}
            if model in DEMO_LR:
                own["lr"] = DEMO_LR[model]
            if own:
                settings[model] = own
        return settings

    def epochs_of(self, model: str) -> int:
        """The epochs `model` trains in the demo: --epochs where given, else its DEMO_EPOCHS."""
        return self.epochs if self.epochs is not None else DEMO_EPOCHS.get(model, DEMO_EPOCHS_ELSE)
