"""`genre predict`: the genre of audio files, with the features and model of a sweep's checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from data_pipeline.audio import AudioDecodeError, load_mono
from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig, LogMelExtractor
from genre.checkpoints import load_checkpoint, model_from_checkpoint
from genre.inference import segment_probabilities
from genre.results import located_in_run

TOP_K = 3
# Windows per forward pass: a 2-minute file is 40 windows; memory stays small on any device.
WINDOW_BATCH = 64


@dataclass
class Prediction:
    """One file's outcome: its top genres, or why it could not be predicted."""

    path: str
    top: list[tuple[str, float]]
    segments: int = 0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        if self.error:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "genre": self.top[0][0],
            "probability": self.top[0][1],
            "top": [{"genre": g, "probability": p} for g, p in self.top],
            "segments": self.segments,
        }


def best_checkpoint(run: str | Path, model: str | None = None) -> str:
    """The checkpoint of the run's best completed trial by validation accuracy (of `model` if given)."""
    table_path = Path(run) / "results.parquet"
    if not table_path.is_file():
        raise UserInputError(
            f"{str(run)!r} holds no sweep results (results.parquet); run `genre sweep` first"
        )
    table = pd.read_parquet(table_path)
    table = table[table["status"] == "completed"]
    if model:
        if model not in set(table["model"]):
            known = ", ".join(sorted(set(table["model"])))
            raise UserInputError(f"the run has no completed trial of {model!r}; it has {known}")
        table = table[table["model"] == model]
    if table.empty:
        raise UserInputError(f"the run in {str(run)!r} has no completed trial")
    best = table.sort_values(["val_segment_accuracy", "val_track_accuracy"], ascending=False).iloc[0]
    return located_in_run(str(best["checkpoint"]), run)


class Predictor:
    """A checkpoint's model with its own feature transform: never re-typed parameters."""

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu") -> None:
        payload = load_checkpoint(checkpoint)
        self.checkpoint = str(checkpoint)
        self.model_name = payload["model"]
        self.labels = [payload["labels"][str(i)] for i in range(len(payload["labels"]))]
        self.features = FeatureConfig.from_dict(payload["features"])
        self.extractor = LogMelExtractor(self.features)
        self.device = torch.device(device)
        self.model = model_from_checkpoint(payload).to(self.device)

    def predict_file(self, path: str | Path) -> Prediction:
        """Every window of the file through the model; the file's probabilities are their mean."""
        try:
            waveform, _, _ = load_mono(path, self.features.sample_rate)
        except AudioDecodeError as error:
            return Prediction(str(path), [], error=str(error))
        mels = self._features(waveform)
        if len(mels) == 0:
            seconds = waveform.numel() / self.features.sample_rate
            return Prediction(
                str(path),
                [],
                error=f"shorter than one {self.features.segment_seconds:g} s window ({seconds:.2f} s)",
            )
        probabilities = self._window_probabilities(mels).mean(dim=0)
        values, indices = probabilities.topk(min(TOP_K, len(self.labels)))
        top = [(self.labels[i], round(float(v), 4)) for v, i in zip(values, indices, strict=True)]
        return Prediction(str(path), top, segments=len(mels))

    def file_probabilities(self, path: str | Path) -> torch.Tensor:
        """[segments, classes] for one file (for evaluation and tests)."""
        waveform, _, _ = load_mono(path, self.features.sample_rate)
        return self._window_probabilities(self._features(waveform))

    def _window_probabilities(self, mels: torch.Tensor) -> torch.Tensor:
        return segment_probabilities(self.model, torch.split(mels, WINDOW_BATCH), self.device)

    def _features(self, waveform: torch.Tensor) -> torch.Tensor:
        # Rounded to float16 as `prepare` stores them: the model sees exactly what it trained on.
        return self.extractor(waveform).half()
