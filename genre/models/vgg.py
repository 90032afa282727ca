"""VGG11 (torchvision's layout): ImageNet convolutional features, a new classifier."""

from __future__ import annotations

import torch
from torch import nn

from data_pipeline.errors import UserInputError
from genre.models.layers import DECIBEL_SCALING, Scaled, mlp_classifier
from genre.models.pretrained import WeightsSource, load_state_dict_file
from genre.models.registry import register_model

FEATURES_PREFIX = "features."


class VGGClassifier(nn.Module):
    """VGG11's conv stack, pooled to one vector per sample, and a small new head.

    torchvision's own head (25,088 -> 4,096 -> 4,096, 120 M parameters) is sized for 224x224 ImageNet
    images; a pooled 512 -> 256 head keeps the pretrained features and works at any input size.
    """

    def __init__(self, features: nn.Module, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Flatten(), mlp_classifier(512, (256,), num_classes, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def vgg11_features_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The conv stack of a torchvision or timm VGG11 state dict, keyed as torchvision's `features`.

    Both name the convolutions `features.N.*` with the same N; their classifiers (torchvision's
    `classifier.*`, timm's `pre_logits.*` and `head.*`) are left out, as genre's head is new.
    """
    return {k[len(FEATURES_PREFIX) :]: v for k, v in state.items() if k.startswith(FEATURES_PREFIX)}


def vgg11_features(weights: WeightsSource | None) -> nn.Module:
    """torchvision's VGG11 conv stack with a one-channel first convolution."""
    import torchvision
    from timm.models import adapt_input_conv

    features = torchvision.models.vgg11(weights=None).features
    if weights is not None:
        state = vgg11_features_state(load_state_dict_file(weights.location))
        missing = sorted(set(features.state_dict()) - set(state))
        if missing:
            raise UserInputError(
                f"{weights.location} is not VGG11's ImageNet weights: no features.{missing[0]} in it"
            )
        features.load_state_dict(state)
    stem = features[0]
    one_channel = nn.Conv2d(1, stem.out_channels, stem.kernel_size, stem.stride, stem.padding)
    with torch.no_grad():
        # timm's adapt_input_conv, as timm does for its own models: the RGB kernels summed.
        one_channel.weight.copy_(adapt_input_conv(1, stem.weight))
        one_channel.bias.copy_(stem.bias)
    features[0] = one_channel
    return features


@register_model(
    "vgg11",
    description="VGG11 (torchvision, ImageNet features) with a new classifier",
    amp=True,
    dropout=0.5,
    input_adapter=f"1 channel: RGB stem weights summed (timm's adapt_input_conv); {DECIBEL_SCALING}",
    pretrained_weights="vgg11",
)
def vgg11(num_classes: int, dropout: float, weights: WeightsSource | None) -> nn.Module:
    return Scaled(VGGClassifier(vgg11_features(weights), num_classes, dropout))
