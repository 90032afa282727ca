"""Running a model over log-mel windows: segment probabilities, in eval mode, without gradients;
and a checkpoint's model loaded for that (`genre predict` and `genre evaluate` share it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from data_pipeline.features import FeatureConfig
from genre.amp import autocast
from genre.checkpoints import load_checkpoint, model_from_checkpoint

# Windows per forward pass: a 2-minute file is 40 windows; memory stays small on any device.
WINDOW_BATCH = 64


def as_model_input(mel: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """[B, n_mels, frames] float16 from the shards -> [B, 1, n_mels, frames] float32 on `device`."""
    # Arrays from Arrow are read-only; torch.tensor copies (once, while converting to float32 anyway).
    tensor = mel.to(device) if isinstance(mel, torch.Tensor) else torch.tensor(mel, device=device)
    return tensor.float().unsqueeze(1)


@torch.no_grad()
def segment_probabilities(
    model: nn.Module,
    mel_batches: Iterable[np.ndarray | torch.Tensor],
    device: torch.device,
    amp: str = "off",
) -> torch.Tensor:
    """Softmax probabilities [segments, classes] (float32, on CPU) for every batch, in order."""
    was_training = model.training
    model.eval()  # the study never switched to eval: dropout and batch statistics leaked into scores
    outputs = []
    try:
        for mel in mel_batches:
            with autocast(amp, device):
                logits = model(as_model_input(mel, device))
            outputs.append(torch.softmax(logits.float(), dim=1).cpu())
    finally:
        model.train(was_training)
    if not outputs:
        return torch.empty(0, 0)
    return torch.cat(outputs)


@dataclass
class LoadedModel:
    """A checkpoint's model in eval mode, with the labels and features it was trained on."""

    name: str
    model: nn.Module
    labels: list[str]
    features: FeatureConfig
    checkpoint: str
    device: torch.device

    @classmethod
    def load(cls, checkpoint: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
        payload = load_checkpoint(checkpoint)
        labels = [payload["labels"][str(i)] for i in range(len(payload["labels"]))]
        device = torch.device(device)
        model = model_from_checkpoint(payload).to(device)
        features = FeatureConfig.from_dict(payload["features"])
        return cls(payload["model"], model, labels, features, str(checkpoint), device)

    def probabilities(self, mels: torch.Tensor) -> torch.Tensor:
        """[windows, classes] for [windows, n_mels, frames] log-mels."""
        return segment_probabilities(self.model, torch.split(mels, WINDOW_BATCH), self.device)
