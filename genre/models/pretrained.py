"""ImageNet weights: found in a local folder, in the library's cache, or on its hub; or not at all.

`--pretrained auto` uses them when they can be had and otherwise trains from scratch with a one-line
warning; `yes` stops with a message saying what to do; `no` never looks.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from data_pipeline.errors import UserInputError
from genre.config import PRETRAINED_MODES

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
HUB_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class WeightsSource:
    """Where to load ImageNet weights from: a local `file`, or the library's `hub` download."""

    name: str
    kind: str  # "file" or "hub"
    location: str

    def describe(self) -> str:
        return f"imagenet ({self.kind}: {self.location})"


@dataclass(frozen=True)
class KnownWeights:
    """A set of ImageNet weights: the library that publishes them and where."""

    library: str  # "timm" or "torchvision"
    identifier: str  # timm model name, or torchvision weights enum "VGG11_Weights.IMAGENET1K_V1"
    file_hint: str  # what a user puts into --weights DIR

    def host(self) -> str:
        return "huggingface.co" if self.library == "timm" else urlparse(self.url()).hostname or ""

    def url(self) -> str:
        if self.library == "timm":
            return f"https://huggingface.co/{self.hub_id()}"
        return self.torchvision_weights().url

    def hub_id(self) -> str:
        import timm

        return timm.models.get_pretrained_cfg(self.identifier).hf_hub_id

    def cached_file(self) -> Path | None:
        """The library's own cached copy, if this machine downloaded it before."""
        if self.library == "timm":
            from huggingface_hub import try_to_load_from_cache

            for filename in ("model.safetensors", "pytorch_model.bin"):
                cached = try_to_load_from_cache(self.hub_id(), filename)
                if isinstance(cached, str):
                    return Path(cached)
            return None
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(self.url()).path).name
        return path if path.is_file() else None

    def torchvision_weights(self):
        """The torchvision weights enum member named by `identifier`."""
        import torchvision

        enum_name, member = self.identifier.split(".")
        return getattr(getattr(torchvision.models, enum_name), member)


KNOWN_WEIGHTS = {
    "efficientnet_b0": KnownWeights(
        "timm",
        "efficientnet_b0",
        "efficientnet_b0.safetensors (model.safetensors of timm/efficientnet_b0.ra_in1k)",
    ),
    "vgg11": KnownWeights(
        "torchvision", "VGG11_Weights.IMAGENET1K_V1", "vgg11-8a719046.pth (download.pytorch.org/models)"
    ),
}


def resolve_weights(
    weights_name: str | None,
    mode: str,
    weights_dir: str | Path | None = None,
    *,
    model: str = "",
    warn: Callable[[str], None] | None = None,
) -> WeightsSource | None:
    """Decide where `weights_name` comes from under `mode`; None means train from scratch.

    Under 'auto', missing weights are reported once through `warn` (default: this module's logger).
    """
    if mode not in PRETRAINED_MODES:
        raise UserInputError(f"--pretrained must be one of {', '.join(PRETRAINED_MODES)}, not {mode!r}")
    if mode == "no" or weights_name is None:
        return None
    known = KNOWN_WEIGHTS[weights_name]
    source, tried = find_weights(weights_name, weights_dir)
    if source is not None:
        return source
    reason = f"no ImageNet weights for {model or weights_name}: {'; '.join(tried)}"
    if mode == "yes":
        raise UserInputError(
            f"{reason}. Put {known.file_hint} in a folder and pass --weights FOLDER, or pass --pretrained no"
        )
    (warn or logger.warning)(f"{reason}; training from scratch")
    return None


def find_weights(
    name: str, weights_dir: str | Path | None, *, allow_hub: bool = True
) -> tuple[WeightsSource | None, list[str]]:
    """Look in `weights_dir`, then the library's cache, then the hub: (source or None, what failed)."""
    known = KNOWN_WEIGHTS[name]
    tried = []
    if weights_dir is not None:
        folder = Path(weights_dir).expanduser()
        if not folder.is_dir():
            raise UserInputError(f"--weights {str(weights_dir)!r} is not a folder")
        files = sorted(p for p in folder.iterdir() if p.name.startswith(name) and p.suffix in WEIGHT_SUFFIXES)
        if files:
            return WeightsSource(name, "file", str(files[0])), tried
        tried.append(f"no {name}*{{{','.join(WEIGHT_SUFFIXES)}}} in {folder}")
    cached = known.cached_file()
    if cached is not None:
        return WeightsSource(name, "file", str(cached)), tried
    tried.append(f"not in the {known.library} cache")
    if not allow_hub:
        return None, tried
    # A quick look first: an offline machine would otherwise spend ~45 s in the hub's retries.
    if _reachable(known.host()):
        return WeightsSource(name, "hub", known.url()), tried
    tried.append(f"{known.host()} unreachable")
    return None, tried


def _reachable(host: str) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=HUB_TIMEOUT_S):
            return True
    except OSError:
        return False


def load_state_dict_file(path: str | Path) -> dict:
    """A state dict from .safetensors or a torch file, never running code from it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state
