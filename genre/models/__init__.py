"""The six architectures of the 2021 study, as a registry. Plain PyTorch: no Ray, no files."""

# Importing the architecture modules registers them, in the study's order.
from genre.models import cnn, efficientnet, vgg  # noqa: F401
from genre.models.pretrained import PRETRAINED_MODES, WeightsSource, resolve_weights
from genre.models.registry import ModelSpec, count_parameters, create_model, get_spec, model_names

__all__ = [
    "PRETRAINED_MODES",
    "ModelSpec",
    "WeightsSource",
    "count_parameters",
    "create_model",
    "get_spec",
    "model_names",
    "resolve_weights",
]
