"""The table `genre models` prints."""

from __future__ import annotations

from pathlib import Path

from genre.models.pretrained import KNOWN_WEIGHTS, find_weights
from genre.models.registry import count_parameters, create_model, get_spec, model_names


def models_table(weights_dir: str | Path | None = None) -> str:
    """One line per registered model: parameters, defaults, input adapter, ImageNet weights."""
    header = f"{'model':<20} {'params':>11} {'amp':>4} {'lr':>7} {'dropout':>7}  weights"
    lines = [header, "-" * len(header)]
    adapters = {}
    for name in model_names():
        spec = get_spec(name)
        params = count_parameters(create_model(name))
        lines.append(
            f"{name:<20} {params:>11,} {'on' if spec.amp else 'off':>4} {spec.lr:>7g} {spec.dropout:>7g}"
            f"  {_weights_status(spec.pretrained_weights, weights_dir)}"
        )
        adapters.setdefault(spec.input_adapter, []).append(name)
    lines.append("")
    lines.append("input: a [batch, 1, n_mels, frames] log-mel batch (any size from 64x64), adapted as")
    lines.extend(f"  {', '.join(names)}: {adapter}" for adapter, names in adapters.items())
    lines.append("amp: mixed precision under --amp auto (bf16 where supported, else fp16)")
    return "\n".join(lines)


def _weights_status(weights_name: str | None, weights_dir: str | Path | None) -> str:
    if weights_name is None:
        return "none (trained from scratch)"
    known = KNOWN_WEIGHTS[weights_name]
    description = f"ImageNet, {known.hub_repo}"
    if weights_dir is None:
        return description
    source, _ = find_weights(weights_name, weights_dir, allow_hub=False)
    return f"{description}: {'found ' + source.location if source else 'not found in ' + str(weights_dir)}"
