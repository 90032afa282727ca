"""`genre predict`: the genre of audio files, with the features and model of a sweep's checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data_pipeline.audio import AudioDecodeError, load_mono
from data_pipeline.features import LogMelExtractor
from genre.checkpoints import LoadedModel

TOP_K = 3


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


class Predictor:
    """A checkpoint's model with its own feature transform: never re-typed parameters."""

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu") -> None:
        self.loaded = LoadedModel.load(checkpoint, device)
        self.features = self.loaded.features
        self.extractor = LogMelExtractor(self.features)

    @property
    def model_name(self) -> str:
        return self.loaded.name

    @property
    def checkpoint(self) -> str:
        return self.loaded.checkpoint

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
        probabilities = self.loaded.probabilities(mels).mean(dim=0)
        labels = self.loaded.labels
        values, indices = probabilities.topk(min(TOP_K, len(labels)))
        top = [(labels[i], round(float(v), 4)) for v, i in zip(values, indices, strict=True)]
        return Prediction(str(path), top, segments=len(mels))

    def file_probabilities(self, path: str | Path) -> torch.Tensor:
        """[segments, classes] for one file (for evaluation and tests)."""
        waveform, _, _ = load_mono(path, self.features.sample_rate)
        return self.loaded.probabilities(self._features(waveform))

    def _features(self, waveform: torch.Tensor) -> torch.Tensor:
        # Rounded to float16 as `prepare` stores them: the model sees exactly what it trained on.
        return self.extractor(waveform).half()
