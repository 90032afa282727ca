"""Small audio files that the tests make themselves: seeded tones plus noise, any format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile


def make_clip(
    path: Path,
    seconds: float,
    *,
    sample_rate: int = 22050,
    channels: int = 1,
    seed: int = 0,
    format: str | None = None,
    subtype: str | None = None,
) -> Path:
    """Write a clip whose spectrum depends on `seed` (a few partials, a beat, some noise)."""
    rng = np.random.default_rng(seed)
    time = np.arange(round(seconds * sample_rate)) / sample_rate
    pitch = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    signal = sum(np.sin(2 * np.pi * pitch * k * time) / k for k in range(1, 5))
    beat = (np.sin(2 * np.pi * rng.uniform(1.0, 3.0) * time) > 0.9).astype(float)
    signal = 0.3 * signal * (0.5 + 0.5 * beat) + 0.05 * rng.standard_normal(time.size)
    frames = np.stack([signal * (0.6 + 0.4 * c) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, (0.5 * frames).astype(np.float32), sample_rate, format=format, subtype=subtype)
    return path


def make_collection(
    root: Path, genres: int = 3, tracks: int = 5, seconds: float = 7.0, extension: str = "wav"
) -> Path:
    """A `<genre>/<file>` folder like GTZAN's: `genres` x `tracks` clips of `seconds` each."""
    for g in range(genres):
        for t in range(tracks):
            name = f"genre{g}"
            make_clip(root / name / f"{name}.{t:05d}.{extension}", seconds, seed=100 * g + t)
    return root
