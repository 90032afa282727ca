"""The names of the metric columns: what the driver needs of the metrics, without torchmetrics."""

from __future__ import annotations

from collections.abc import Sequence

METRIC_NAMES = ("accuracy", "precision", "recall")
LEVELS = ("segment", "track")


def metric_columns(splits: Sequence[str] = ("train", "val", "test")) -> list[str]:
    """The results table's metric columns, in order."""
    return [f"{s}_{level}_{m}" for s in splits for level in LEVELS for m in METRIC_NAMES]
