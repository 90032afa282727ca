"""Checkpoints that carry everything needed to use them: weights, config, features, labels.

Saved with torch.save and loaded with `weights_only=True`: loading a checkpoint never runs code.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data_pipeline.errors import UserInputError
from genre.config import TrainConfig
from genre.models import create_model

CHECKPOINT_FORMAT = "genre-checkpoint"
CHECKPOINT_VERSION = 1
BEST_NAME = "best.pt"


def save_best(
    folder: str | Path,
    model: nn.Module,
    *,
    config: TrainConfig,
    features: dict[str, Any],
    labels: dict[str, str],
    epoch: int,
    metrics: dict[str, float],
) -> Path:
    """Write `folder/best.pt` atomically: a reader sees the old file or the new one, never half."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
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
    target = folder / BEST_NAME
    partial = folder / f".{BEST_NAME}.{uuid.uuid4().hex[:8]}"
    torch.save(payload, partial)
    os.replace(partial, target)
    return target


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a genre checkpoint (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, not a traceback
        raise UserInputError(f"{path} is not a readable genre checkpoint: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(f"{path} is not a genre checkpoint")
    return payload


def model_from_checkpoint(payload: dict[str, Any]) -> nn.Module:
    """Rebuild the checkpoint's model (no pretrained download: its own weights follow) in eval mode."""
    config = TrainConfig.from_dict(payload["config"])
    model = create_model(config.model, num_classes=len(payload["labels"]), dropout=config.dropout)
    model.load_state_dict(payload["state_dict"])
    return model.eval()
