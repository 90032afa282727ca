"""Pieces the architectures share."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

# prepare writes dB relative to each segment's peak, clipped at -80: [-80, 0] maps to [-1, 1].
DB_OFFSET, DB_SCALE = 40.0, 40.0
# What DecibelScaling does to a network's input, in words for `genre models`.
DECIBEL_SCALING = "dB scaled to about [-1, 1]"


class DecibelScaling(nn.Module):
    """Maps log-mel dB to about [-1, 1], the range the networks (and ImageNet stems) expect."""

    def forward(self, decibels: torch.Tensor) -> torch.Tensor:
        return (decibels + DB_OFFSET) / DB_SCALE


def mlp_classifier(
    in_features: int, hidden: tuple[int, ...], num_classes: int, dropout: float
) -> nn.Sequential:
    """[dropout -> linear -> ReLU] per hidden width, then dropout -> linear to the classes."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(in_features, width), nn.ReLU(inplace=True)]
        in_features = width
    return nn.Sequential(*layers, nn.Dropout(dropout), nn.Linear(in_features, num_classes))


class ClampedMaxPool(nn.Module):
    """Max pooling that never asks for more than the input has: a too-small axis pools to 1.

    The study's pools (up to 8) assume 288x432 images; clamping lets every model take any input from
    64x64 up without a size tied to one image.
    """

    def __init__(self, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = (min(self.kernel[0], x.shape[-2]), min(self.kernel[1], x.shape[-1]))
        return functional.max_pool2d(x, kernel)


class TimeGRUHead(nn.Module):
    """A bidirectional GRU over the time axis of a [B, C, F, T] feature map, then a classifier.

    Frequency is averaged away first, so the sequence is [B, T, C] whatever the input's n_mels. The
    GRU is `batch_first`: it runs over each sample's time steps (the study's ran across the batch).
    """

    def __init__(self, channels: int, num_classes: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.gru = nn.GRU(
            channels,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.classifier = mlp_classifier(2 * hidden, (256,), num_classes, dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        sequence = features.mean(dim=2).transpose(1, 2)  # [B, C, F, T] -> [B, T, C]
        _, hidden = self.gru(sequence)
        # hidden: [layers * 2, B, H]; the last layer's forward and backward final states.
        last = torch.cat([hidden[-2], hidden[-1]], dim=1)
        return self.classifier(last)


class Scaled(nn.Module):
    """A network behind DecibelScaling; `net` keeps the library's own parameter names."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.scale = DecibelScaling()
        self.net = net

    def forward(self, decibels: torch.Tensor) -> torch.Tensor:
        return self.net(self.scale(decibels))
