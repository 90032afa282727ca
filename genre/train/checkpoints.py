"""Checkpoints that carry everything needed to use them: weights, config, features, labels; and a
checkpoint's model loaded to score windows (`genre predict` and `genre evaluate` share it).

Saved with torch.save and loaded with `weights_only=True`: loading a checkpoint never runs code.
A checkpoint lives at a path or at an s3:// / gs:// URI (data_pipeline.storage), wherever the sweep's run
storage is.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.storage import Storage, open_storage, redact
from genre.config import TrialConfig
from genre.models import create_model, get_spec
from genre.train.amp import resolve_amp
from genre.train.forward import resolve_device, segment_probabilities, window_batch

CHECKPOINT_FORMAT = "genre-checkpoint"
CHECKPOINT_VERSION = 1


def save_best(
    location: str | Storage,
    model: nn.Module,
    *,
    config: TrialConfig,
    features: dict[str, Any],
    labels: dict[str, str],
    epoch: int,
    metrics: dict[str, float],
) -> str:
    """Write the checkpoint whole (a reader sees the old file or the new one); return its location
    (without credentials)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": config.model,
        "config": config.to_dict(),
        "features": features,
        "labels": labels,
        "epoch": epoch,
        "metrics": metrics,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    target = open_storage(location)
    target.write_bytes(buffer.getvalue())
    return target.location


@dataclass(frozen=True)
class CheckpointBytes:
    """A checkpoint file's bytes and where they came from: what a process on another node loads when
    the checkpoint's path is this machine's only (a Ray Data actor, a Serve replica)."""

    location: str
    data: bytes


def read_checkpoint(path: str | Path) -> CheckpointBytes:
    """The checkpoint's bytes from a path or a URI; a missing or unreadable one is a one-line error."""
    try:
        return CheckpointBytes(str(path), open_storage(path).read_bytes())
    except (FileNotFoundError, IsADirectoryError):
        raise UserInputError(f"no checkpoint at {path}") from None
    except OSError as error:
        raise UserInputError(f"cannot read the checkpoint {path}: {error}") from None


def load_checkpoint(source: str | Path | CheckpointBytes) -> dict[str, Any]:
    """Load a genre checkpoint (tensors and plain values only) from a path, a URI or its bytes."""
    read = source if isinstance(source, CheckpointBytes) else read_checkpoint(source)
    path, data = read.location, read.data
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, i.e. running the file's code: never repeat it.
        raise UserInputError(
            f"{path} holds objects other than tensors and plain values; it was refused because "
            "loading it could run code (a genre checkpoint never needs that)"
        ) from None
    except Exception as error:  # a truncated or foreign file: say which, not a traceback
        raise UserInputError(
            f"{path} is not a readable genre checkpoint: it is truncated, damaged or another kind of file "
            f"({_gist(error)})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(f"{path} is not a genre checkpoint")
    return payload


def _gist(error: Exception) -> str:
    """Torch's reason on one line, without its advice (which can be to load with weights_only=False)."""
    lines = str(error).strip().splitlines()
    first_sentence = lines[0].split(". ")[0].rstrip(".") if lines else ""
    if not first_sentence or "weights_only" in first_sentence:
        return type(error).__name__
    return f"{type(error).__name__}: {first_sentence}"


def check_finite_weights(payload: dict[str, Any], checkpoint: str | Path) -> None:
    """Refuse a checkpoint whose weights are not all finite: every score and probability of its model
    would be NaN."""
    broken = [
        name
        for name, tensor in payload["state_dict"].items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if broken:
        more = f" and {len(broken) - 1} more" if len(broken) > 1 else ""
        raise UserInputError(
            f"{redact(str(checkpoint))} holds weights that are not finite numbers (NaN or infinity: "
            f"{broken[0]}{more}); its trial diverged or trained on broken data: use another trial "
            "(--model), or train again"
        )


def model_from_checkpoint(payload: dict[str, Any]) -> nn.Module:
    """Rebuild the checkpoint's model (no pretrained download: its own weights follow) in eval mode."""
    dropout = payload["config"]["dropout"]
    model = create_model(payload["model"], num_classes=len(payload["labels"]), dropout=dropout)
    model.load_state_dict(payload["state_dict"])
    return model.eval()


@dataclass
class LoadedModel:
    """A checkpoint's model in eval mode on its device, with the labels and features it was trained on,
    the mixed precision its training used on such a device, and the windows it takes per forward pass."""

    name: str
    model: nn.Module
    labels: list[str]
    features: FeatureConfig
    checkpoint: str
    device: torch.device
    amp: str
    batch_size: int

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | CheckpointBytes,
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
    ) -> LoadedModel:
        """`checkpoint` is a path, a URI or its bytes; `device` is cpu, cuda, cuda:N or auto;
        `batch_size` None takes the device's default."""
        device = resolve_device(device)
        payload = load_checkpoint(checkpoint)
        location = checkpoint.location if isinstance(checkpoint, CheckpointBytes) else str(checkpoint)
        check_finite_weights(payload, location)
        labels = [payload["labels"][str(i)] for i in range(len(payload["labels"]))]
        model = model_from_checkpoint(payload).to(device)
        features = FeatureConfig.from_dict(payload["features"])
        # The trial's --amp settled for this device as its workers settled it: GPU scores then match
        # the sweep's on a GPU, CPU scores the sweep's on a CPU.
        amp = resolve_amp(payload["config"]["amp"], get_spec(payload["model"]).amp, device)
        return cls(
            payload["model"],
            model,
            labels,
            features,
            location,
            device,
            amp,
            window_batch(device, batch_size),
        )

    def probabilities(self, mels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[windows, classes] on the CPU for [windows, n_mels, frames] log-mels, a batch at a time."""
        batches = (mels[start : start + self.batch_size] for start in range(0, len(mels), self.batch_size))
        return segment_probabilities(self.model, batches, self.device, self.amp)
