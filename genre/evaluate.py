"""`genre evaluate`: a checkpoint on a dataset's test split: scores, per-genre scores, confusion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_precision,
    multiclass_recall,
)

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.manifest import read_manifest_and_hash
from data_pipeline.shards import check_shards, read_mels, read_split
from data_pipeline.storage import redact
from genre.train.checkpoints import LoadedModel
from genre.train.metrics import level_metrics, track_probabilities


@dataclass
class Evaluation:
    """Scores of one checkpoint on one split, and where the report files are."""

    model: str
    scores: dict[str, float]
    per_genre: pd.DataFrame
    confusion: dict[str, pd.DataFrame]
    files: dict[str, Path]


def evaluate(
    data: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    split: str = "test",
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
) -> Evaluation:
    """Score `checkpoint` on `data`'s `split` (DATA a path or an s3:// / gs:// URI); write metrics.json,
    per_genre.csv, confusion_*.csv/.png.

    `device`: cpu, cuda, cuda:N or auto; `batch_size`: windows per forward pass (None: by device)."""
    check_report_folder(Path(out))
    # Its hash pins the dataset: a DATA prepared again during the evaluation is refused, not half read.
    manifest, manifest_sha256 = read_manifest_and_hash(data)
    if split not in manifest["shards"]:
        groups = ", ".join(manifest["shards"])
        raise UserInputError(
            f"the dataset has no {split!r} split; it has {groups} (pass one with --split: a dataset "
            "prepared with --folds has folds, each a test split of its own trials)"
        )
    check_shards(data, manifest)
    loaded = LoadedModel.load(checkpoint, device, batch_size)
    if FeatureConfig.from_dict(manifest["features"]) != loaded.features:
        raise UserInputError(
            f"the dataset's features ({_shape(manifest['features'])}) are not the ones the model was trained "
            f"on ({_shape(loaded.features.to_dict())}); prepare the audio with the model's parameters"
        )
    labels = [manifest["labels"][str(i)] for i in range(len(manifest["labels"]))]
    if labels != loaded.labels:
        raise UserInputError(
            "the dataset's labels differ from the model's; evaluate on a dataset of the same genres"
        )
    table = read_split(data, split, columns=["track_id", "label", "mel"], manifest_sha256=manifest_sha256)
    if table.num_rows == 0:
        raise UserInputError(f"the dataset's {split} split is empty")
    # The split's float16 windows stay on the host; only one batch at a time goes to the device.
    probabilities = loaded.probabilities(read_mels(table))
    if not bool(torch.isfinite(probabilities).all()):  # the shards' values and the weights were checked
        raise UserInputError(f"the model's output on the {split} split is not finite (NaN or infinity)")
    targets = torch.tensor(table.column("label").to_pylist())
    track_probs, track_targets, _ = track_probabilities(probabilities, targets, table["track_id"].to_pylist())
    scores = level_metrics(split, (probabilities, targets), (track_probs, track_targets))

    classes = len(labels)
    per_genre = pd.DataFrame({"genre": labels})
    confusion = {}
    for level, probs, target in (("segment", probabilities, targets), ("track", track_probs, track_targets)):
        predictions = probs.argmax(dim=1)
        per_genre[f"{level}_precision"] = multiclass_precision(
            predictions, target, classes, average=None
        ).numpy()
        per_genre[f"{level}_recall"] = multiclass_recall(predictions, target, classes, average=None).numpy()
        matrix = multiclass_confusion_matrix(predictions, target, classes).numpy()
        confusion[level] = pd.DataFrame(matrix, index=labels, columns=labels)
    per_genre["segments"] = np.bincount(targets.numpy(), minlength=classes)

    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"--out {str(folder)!r} cannot be made: {error.strerror}") from None
    files = {
        "metrics": folder / "metrics.json",
        "per_genre": folder / "per_genre.csv",
        "confusion_png": folder / "confusion.png",
    }
    report = {
        "model": loaded.name,
        "checkpoint": str(checkpoint),
        "data": redact(str(data)),
        "split": split,
        "device": str(loaded.device),
        "amp": loaded.amp,
        **scores,
    }
    files["metrics"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    per_genre.to_csv(files["per_genre"], index=False)
    for level, frame in confusion.items():
        files[f"confusion_{level}"] = folder / f"confusion_{level}.csv"
        frame.to_csv(files[f"confusion_{level}"])
    _plot_confusion(confusion, loaded.name, split, files["confusion_png"])
    return Evaluation(loaded.name, scores, per_genre, confusion, files)


# What evaluate writes into its folder; metrics.json, with these keys, marks the folder as an evaluation's.
REPORT_FILES = frozenset(
    {"metrics.json", "per_genre.csv", "confusion.png", "confusion_segment.csv", "confusion_track.csv"}
)
_REPORT_KEYS = frozenset({"model", "checkpoint", "split"})


def check_report_folder(out: Path) -> None:
    """Refuse an --out that is a file, or a folder holding anything but an earlier evaluation's files."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {str(out)!r} exists and is not a folder; name a folder for the report")
    if not out.is_dir() or not any(out.iterdir()):
        return
    # Like prepare's OUT: replace only what evaluate itself wrote, never the user's files (nor, through a
    # link, a file elsewhere).
    foreign = sorted(
        entry.name
        for entry in out.iterdir()
        if entry.name not in REPORT_FILES or entry.is_symlink() or not entry.is_file()
    )
    if not foreign and not _is_report(out / "metrics.json"):
        foreign = ["metrics.json"]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UserInputError(
            f"--out {str(out)!r} holds files that are not an evaluation's ({foreign[0]}{more}); "
            "evaluate replaces only its own report: choose an empty or new folder"
        )


def _is_report(path: Path) -> bool:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(report, dict) and report.keys() >= _REPORT_KEYS


def render_evaluation(evaluation: Evaluation) -> str:
    """Scores, per-genre precision and recall, and the track-level confusion matrix as text."""
    lines = [f"model: {evaluation.model}"]
    for level in ("segment", "track"):
        values = [evaluation.scores[k] for k in evaluation.scores if f"_{level}_" in k]
        lines.append(
            f"  {level:<8} accuracy {values[0]:.3f}  precision {values[1]:.3f}  recall {values[2]:.3f}"
        )
    lines += [
        "",
        evaluation.per_genre.round(3).to_string(index=False),
        "",
        "confusion (tracks; rows: true genre)",
    ]
    lines.append(evaluation.confusion["track"].to_string())
    return "\n".join(lines)


def _plot_confusion(confusion: dict[str, pd.DataFrame], model: str, split: str, path: Path) -> None:
    from genre.sweep.plots import plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, (level, frame) in zip(axes, confusion.items(), strict=True):
        ax.imshow(frame.to_numpy(), cmap="Blues")
        ax.set_xticks(range(len(frame)), frame.columns, rotation=45, ha="right")
        ax.set_yticks(range(len(frame)), frame.index)
        for (row, column), count in np.ndenumerate(frame.to_numpy()):
            ax.text(column, row, str(count), ha="center", va="center", fontsize=8)
        ax.set(title=f"{model}, {split} split, {level}s", xlabel="predicted", ylabel="true")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _shape(features: dict[str, Any]) -> str:
    return f"{features['n_mels']} mels, {features['segment_seconds']} s at {features['sample_rate']} Hz"
