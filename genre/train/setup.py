"""What a trial hands each of its Ray Train workers: one frozen `WorkerSetup`, no untyped settings.

Built in the trial's actor (genre.trial.trainable), read in the workers (genre.train.worker): so no
torch and no Ray here, only what both processes already import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from data_pipeline.storage import Storage
from genre.config import TrialConfig
from genre.run_folder import TrialFolder


@dataclass(frozen=True)
class WorkerSetup:
    """One trial's settings, every default filled, and where its workers read and write."""

    trial: TrialConfig
    # Opened by the driver: their filesystems hold the storages' credentials, if any.
    folder: TrialFolder
    data: Storage
    # DATA's manifest hash at the sweep's start: every read refuses a dataset prepared again since.
    manifest_sha256: str
    # From DATA's manifest, recorded as they are in the trial's checkpoint.
    features: dict[str, Any]
    labels: dict[str, str]
    # Whether each worker holds its share of the train split in memory (else it streams).
    train_held: bool
