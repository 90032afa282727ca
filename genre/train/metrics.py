"""Accuracy, macro precision and macro recall at segment and track level, with torchmetrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_precision,
    multiclass_recall,
)

from genre.reports import LEVELS


def classification_metrics(probabilities: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy (over samples), precision and recall (macro-averaged over classes)."""
    num_classes = probabilities.shape[1]
    predictions = probabilities.argmax(dim=1)
    common = {"num_classes": num_classes}
    return {
        "accuracy": float(multiclass_accuracy(predictions, labels, average="micro", **common)),
        "precision": float(multiclass_precision(predictions, labels, average="macro", **common)),
        "recall": float(multiclass_recall(predictions, labels, average="macro", **common)),
    }


def track_probabilities(
    probabilities: torch.Tensor, labels: torch.Tensor, track_ids: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A track's probabilities are the mean of its segments' (as in sota-music-tagging-models)."""
    tracks, inverse = np.unique(np.asarray(track_ids, dtype=object).astype(str), return_inverse=True)
    index = torch.from_numpy(inverse).long()
    sums = torch.zeros(len(tracks), probabilities.shape[1]).index_add_(0, index, probabilities.float())
    counts = torch.zeros(len(tracks)).index_add_(0, index, torch.ones(len(index)))
    track_labels = torch.zeros(len(tracks), dtype=torch.long).index_copy_(0, index, labels.long())
    return sums / counts[:, None], track_labels, tracks.tolist()


def split_metrics(
    split: str, probabilities: torch.Tensor, labels: torch.Tensor, track_ids: Sequence[str]
) -> dict[str, float]:
    """`{split}_{segment,track}_{accuracy,precision,recall}` for one split's predictions."""
    track_probs, track_labels, _ = track_probabilities(probabilities, labels, track_ids)
    return level_metrics(split, (probabilities, labels), (track_probs, track_labels))


def level_metrics(
    split: str, segments: tuple[torch.Tensor, torch.Tensor], tracks: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, float]:
    """The same, from (probabilities, labels) of the segments and of their tracks."""
    return {
        f"{split}_{level}_{name}": value
        for level, (probabilities, labels) in zip(LEVELS, (segments, tracks), strict=True)
        for name, value in classification_metrics(probabilities, labels).items()
    }
