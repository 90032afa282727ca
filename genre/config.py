"""Typed configuration of one training run; the CLI and the sweep build it, the workers read it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AMP_MODES = ("auto", "off", "bf16", "fp16")
PRETRAINED_MODES = ("auto", "yes", "no")


@dataclass(frozen=True)
class TrainConfig:
    """One model's training: what the study fixed (15 epochs, Adam, lr 1e-4, batch 16) by default."""

    model: str
    data: str
    epochs: int = 15
    batch_size: int = 16
    lr: float | None = None  # None: the registry's default for the model
    dropout: float | None = None
    amp: str = "auto"
    pretrained: str = "auto"
    weights_dir: str | None = None
    seed: int = 0
    # Where this trial's best checkpoint goes (best.pt); set by the sweep per trial.
    checkpoint_dir: str = ""
    # A worker's share of the train split up to this size is held in memory (on its GPU) and
    # shuffled whole every epoch; a larger one streams from Ray Data through the shuffle buffer.
    train_in_memory_mib: int = 2048
    # Rows held for shuffling a streamed train split; a fresh order every epoch.
    shuffle_buffer: int = 2048
    torch_threads: int = 1
    # Hidden, for fault-injection tests: a genre.faults spec (KIND@EPOCH:STEP[:PATH]) or "".
    fault: str = ""

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DemoConfig:
    """`genre demo`: sized to finish in minutes on two CPU cores while still telling models apart."""

    out: Path = Path("genre-demo")
    tracks_per_genre: int = 12
    seconds: float = 12.0
    # 64 mel bands over 3 s windows (64 x 130): half the study-like input, a quarter of the time.
    n_mels: int = 64
    epochs: int = 4
    # A few epochs on a few hundred segments need a faster rate than the study's 1e-4 over 15.
    lr: float = 1e-3
    batch_size: int = 16
    models: tuple[str, ...] = ()  # empty: every registered model
    seed: int = 0
    address: str | None = None
