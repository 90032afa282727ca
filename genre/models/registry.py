"""The model registry: a name maps to a builder and the model's defaults.

Adding a model is one builder function decorated with `@register_model(...)` in a module that
`genre.models` imports; training, prediction, sweeps and `genre models` pick it up from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from genre.config import ModelDefaults
from genre.models.layers import DECIBEL_SCALING
from genre.models.pretrained import WeightsSource

Builder = Callable[[int, float, WeightsSource | None], nn.Module]
# A model's search space when it registers none (`genre sweep --num-samples N` without --search-space):
# the rate a decade either side of its own, as the study's models are tuned about theirs, and these.
SEARCH_LR_FACTOR = 10.0
SEARCH_BATCH_SIZES = [16, 32, 64]
SEARCH_DROPOUT = [0.1, 0.5]


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture and its defaults."""

    name: str
    builder: Builder
    description: str
    # Mixed precision under `--amp auto`: on for the big ImageNet networks, off for the small CNNs.
    amp: bool
    lr: float
    dropout: float
    # How a [B, 1, n_mels, frames] dB batch becomes the network's input.
    input_adapter: str
    # Name of the ImageNet weights the builder can start from (see genre.models.pretrained), or None.
    pretrained_weights: str | None = None
    # Its own search space, as a `search:` section writes one; None: `search_space`'s default.
    search: Mapping[str, Any] | None = None

    @property
    def supports_pretrained(self) -> bool:
        return self.pretrained_weights is not None

    def search_space(self, lr: float | None = None) -> dict[str, Any]:
        """The distributions a sweep draws this model's trials from when it is given none: its own, else
        the rate about `lr` (the sweep's --lr, else the model's), batch size and dropout."""
        if self.search is not None:
            return {name: dict(distribution) for name, distribution in self.search.items()}
        centre = lr or self.lr
        return {
            "lr": {"loguniform": [centre / SEARCH_LR_FACTOR, centre * SEARCH_LR_FACTOR]},
            "batch_size": {"choice": list(SEARCH_BATCH_SIZES)},
            "dropout": {"uniform": list(SEARCH_DROPOUT)},
        }

    @property
    def defaults(self) -> ModelDefaults:
        """What a trial takes where the sweep leaves the learning rate or dropout open."""
        return ModelDefaults(lr=self.lr, dropout=self.dropout)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    description: str,
    amp: bool = False,
    lr: float = 1e-4,  # the study's Adam rate: every model of the six keeps it
    dropout: float = 0.2,
    input_adapter: str = DECIBEL_SCALING,
    pretrained_weights: str | None = None,
    search: Mapping[str, Any] | None = None,
) -> Callable[[Builder], Builder]:
    """Register `builder(num_classes, dropout, weights) -> nn.Module` under `name`; `search`, a search
    space as a sweep's `search:` section writes one, replaces the default one of its sweeps."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(
            name, builder, description, amp, lr, dropout, input_adapter, pretrained_weights, search
        )
        return builder

    return decorate


def model_names() -> list[str]:
    """Registered names, in registration order (the study's order)."""
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec of `name`, or a KeyError that lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}") from None


def create_model(
    name: str,
    num_classes: int = 10,
    *,
    dropout: float | None = None,
    weights: WeightsSource | None = None,
) -> nn.Module:
    """Build `name` for `num_classes` genres, from ImageNet `weights` when given."""
    spec = get_spec(name)
    if weights is not None and not spec.supports_pretrained:
        raise ValueError(f"model {name!r} has no pretrained weights")
    return spec.builder(num_classes, spec.dropout if dropout is None else dropout, weights)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
