"""Running a model over log-mel batches: segment probabilities, in eval mode, without gradients."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from genre.amp import autocast


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
