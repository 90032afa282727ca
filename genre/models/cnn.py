"""The study's own CNNs: a 3-layer baseline, a 4-layer CNN, and the 4-layer CNN with a GRU."""

from __future__ import annotations

from torch import nn

from genre.models.layers import ClampedMaxPool, DecibelScaling, TimeGRUHead, mlp_classifier
from genre.models.pretrained import WeightsSource
from genre.models.registry import register_model

# The 4-layer CNN's widths and pools (frequency, time) as in the study.
CNN4_CHANNELS = (32, 64, 128, 256)
CNN4_POOLS = ((2, 2), (2, 2), (4, 4), (8, 8))
# Before a GRU, time is pooled gently so the sequence keeps its steps: 128x130 -> 1x8, not 1x1.
CNN4_GRU_POOLS = ((2, 2), (2, 2), (4, 2), (8, 2))
GRU_HIDDEN, GRU_LAYERS = 512, 3


def cnn4_blocks(pools: tuple[tuple[int, int], ...]) -> nn.Sequential:
    """4x [conv3x3 pad1 -> BN -> ReLU -> max pool], 32/64/128/256 channels."""
    layers: list[nn.Module] = []
    in_channels = 1
    for out_channels, pool in zip(CNN4_CHANNELS, pools, strict=True):
        layers += [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            ClampedMaxPool(pool),
        ]
        in_channels = out_channels
    return nn.Sequential(*layers)


@register_model("cnn3", description="3-layer CNN baseline (16/32/64, FC 128-64)")
def cnn3(num_classes: int, dropout: float, weights: WeightsSource | None) -> nn.Module:
    layers: list[nn.Module] = [DecibelScaling()]
    in_channels = 1
    for out_channels in (16, 32, 64):
        layers += [nn.Conv2d(in_channels, out_channels, 3), nn.ReLU(inplace=True), ClampedMaxPool((2, 2))]
        in_channels = out_channels
    return nn.Sequential(
        *layers,
        # A fixed 4x4 grid replaces the study's 113,152-wide flatten, which tied it to 288x432 images.
        nn.AdaptiveAvgPool2d((4, 4)),
        nn.Flatten(),
        mlp_classifier(64 * 16, (128, 64), num_classes, dropout),
    )


@register_model("cnn4", description="4-layer CNN with batch norm (32-256, FC 512-256)")
def cnn4(num_classes: int, dropout: float, weights: WeightsSource | None) -> nn.Module:
    return nn.Sequential(
        DecibelScaling(),
        cnn4_blocks(CNN4_POOLS),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        mlp_classifier(CNN4_CHANNELS[-1], (512, 256), num_classes, dropout),
    )


@register_model("cnn4_gru", description="4-layer CNN + bidirectional GRU (3x512) over time")
def cnn4_gru(num_classes: int, dropout: float, weights: WeightsSource | None) -> nn.Module:
    return nn.Sequential(
        DecibelScaling(),
        cnn4_blocks(CNN4_GRU_POOLS),
        TimeGRUHead(CNN4_CHANNELS[-1], num_classes, GRU_HIDDEN, GRU_LAYERS, dropout),
    )
