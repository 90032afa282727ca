"""ImageNet weights: found in a local folder, in a library's cache, or downloaded from the hub; or not at all.

`--pretrained auto` uses them when they can be had and otherwise trains from scratch with a one-line
warning; `yes` stops with a message saying what to do; `no` never looks. The driver resolves first, so
a download lands in this machine's hub cache and the workers here find it there; a worker on another
node whose cache lacks it downloads it itself, the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.errors import UserInputError
from genre.config import PRETRAINED_MODES
from genre.models.hub import HubSettings, HubUnavailable, cached_hub_file, download_hub_file

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
HUB_FILE = "model.safetensors"  # what timm's hub repositories publish
HUB_CACHED_FILES = (HUB_FILE, "pytorch_model.bin")  # either one, where an older download left it


@dataclass(frozen=True)
class WeightsSource:
    """A local file of ImageNet weights, and how it was found: `file` (--weights), `cache` or `hub`."""

    name: str
    kind: str  # "file": the --weights folder; "cache": a library's cache; "hub": downloaded just now
    location: str  # the file's path

    def describe(self) -> str:
        return f"imagenet ({self.kind}: {self.location})"


@dataclass(frozen=True)
class KnownWeights:
    """A set of ImageNet weights: its repository on the Hugging Face hub, and files users may hold."""

    hub_repo: str  # timm's repository, e.g. "timm/vgg11.tv_in1k"
    file_hint: str  # what a user puts into --weights DIR
    torch_hub_file: str | None = None  # torchvision's download of the same weights, in torch's hub cache

    def cached_file(self, settings: HubSettings) -> tuple[Path | None, str]:
        """This machine's cached copy, if it downloaded one before, and the caches looked in."""
        cached = cached_hub_file(self.hub_repo, HUB_CACHED_FILES, settings)
        if cached is not None or self.torch_hub_file is None:
            return cached, "the Hugging Face cache"
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / self.torch_hub_file
        return (path if path.is_file() else None), "the Hugging Face and torch caches"


KNOWN_WEIGHTS = {
    "efficientnet_b0": KnownWeights(
        "timm/efficientnet_b0.ra_in1k",
        "efficientnet_b0.safetensors (model.safetensors of timm/efficientnet_b0.ra_in1k)",
    ),
    "vgg11": KnownWeights(
        "timm/vgg11.tv_in1k",
        "vgg11.safetensors (model.safetensors of timm/vgg11.tv_in1k) or torchvision's vgg11-8a719046.pth",
        torch_hub_file="vgg11-8a719046.pth",
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
    """Look in `weights_dir`, the caches, then download from the hub: (source or None, what failed)."""
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
    settings = HubSettings.from_environment()
    cached, caches = known.cached_file(settings)
    if cached is not None:
        return WeightsSource(name, "cache", str(cached)), tried
    tried.append(f"not in {caches}")
    if not allow_hub:
        return None, tried
    try:
        downloaded = download_hub_file(known.hub_repo, HUB_FILE, settings)
    except HubUnavailable as unavailable:
        tried.append(f"{known.hub_repo}: {unavailable}")
        return None, tried
    return WeightsSource(name, "hub", str(downloaded)), tried


def load_state_dict_file(path: str | Path) -> dict:
    """A state dict from .safetensors or a torch file, never running code from it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state
