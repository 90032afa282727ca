"""EfficientNet-b0 (timm), fine-tuned whole, alone or with a GRU over its feature map's time axis."""

from __future__ import annotations

import torch
from torch import nn

from genre.models.cnn import GRU_HIDDEN, GRU_LAYERS
from genre.models.layers import DECIBEL_SCALING, DecibelScaling, Scaled, TimeGRUHead
from genre.models.pretrained import WeightsSource
from genre.models.registry import register_model

ONE_CHANNEL = f"1 channel: timm sums the RGB stem weights (in_chans=1); {DECIBEL_SCALING}"


def efficientnet_b0_backbone(weights: WeightsSource | None, **kwargs) -> nn.Module:
    """timm's efficientnet_b0 for one input channel, from the file of `weights` the library's way."""
    import timm

    if weights is None:
        return timm.create_model("efficientnet_b0", pretrained=False, in_chans=1, **kwargs)
    # The file goes through timm's own loader (stem summed to one channel, classifier dropped).
    return timm.create_model(
        "efficientnet_b0",
        pretrained=True,
        pretrained_cfg_overlay={"file": weights.location},
        in_chans=1,
        **kwargs,
    )


class EfficientNetGRU(nn.Module):
    """EfficientNet-b0's feature map [B, 1280, F/32, T/32] read as a sequence over time by a GRU."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.scale = DecibelScaling()
        self.net = backbone
        self.head = TimeGRUHead(backbone.num_features, num_classes, GRU_HIDDEN, GRU_LAYERS, dropout)

    def forward(self, decibels: torch.Tensor) -> torch.Tensor:
        return self.head(self.net.forward_features(self.scale(decibels)))


@register_model(
    "efficientnet_b0",
    description="EfficientNet-b0 (timm, ImageNet), all layers fine-tuned",
    amp=True,
    input_adapter=ONE_CHANNEL,
    pretrained_weights="efficientnet_b0",
)
def efficientnet_b0(num_classes: int, dropout: float, weights: WeightsSource | None) -> nn.Module:
    return Scaled(efficientnet_b0_backbone(weights, num_classes=num_classes, drop_rate=dropout))


@register_model(
    "efficientnet_b0_gru",
    description="EfficientNet-b0 features + bidirectional GRU (3x512) over time",
    amp=True,
    input_adapter=ONE_CHANNEL,
    pretrained_weights="efficientnet_b0",
)
def efficientnet_b0_gru(num_classes: int, dropout: float, weights: WeightsSource | None) -> nn.Module:
    return EfficientNetGRU(efficientnet_b0_backbone(weights, num_classes=0), num_classes, dropout)
