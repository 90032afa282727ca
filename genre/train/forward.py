"""Running a model over log-mel batches: segment probabilities, in eval mode, without gradients; and
the device that `genre predict` and `genre evaluate` run it on."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from data_pipeline.errors import UserInputError
from genre.config import WINDOW_BATCH
from genre.train.amp import autocast

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' is the GPU where torch sees one, else the CPU; a GPU asked for and not there is refused."""
    if isinstance(device, torch.device):
        device = str(device)
    if not _DEVICE.fullmatch(device):
        raise UserInputError(f"device must be {DEVICE_CHOICES}, not {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(
                f"device {device} was asked for, but torch sees no CUDA GPU here (no GPU, no driver, or a "
                "CPU-only torch); use --device cpu, or auto to take a GPU only where there is one"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise UserInputError(
                f"device {device} was asked for, but torch sees {count} GPU(s): cuda:0 to cuda:{count - 1}"
            )
    return resolved


def window_batch(device: torch.device, batch_size: int | None = None) -> int:
    """`batch_size` where given, else the device's default (WINDOW_BATCH)."""
    if batch_size is None:
        return WINDOW_BATCH.get(device.type, WINDOW_BATCH["cuda"])
    if batch_size < 1:
        raise UserInputError(f"the batch size must be at least 1, got {batch_size}")
    return batch_size


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
