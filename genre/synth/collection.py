"""A labelled collection in GTZAN's layout, `<genre>/<genre>.000NN.wav`, the same bytes per seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from data_pipeline.errors import UserInputError
from genre.synth.compose import compose_track
from genre.synth.styles import GENRES


@dataclass(frozen=True)
class SynthConfig:
    """How many clips, how long, at what rate, from which seed."""

    out: Path
    tracks_per_genre: int = 10
    seconds: float = 30.0
    sample_rate: int = 22050
    seed: int = 0
    genres: tuple[str, ...] = GENRES

    def __post_init__(self) -> None:
        if self.tracks_per_genre < 1 or self.seconds <= 0 or self.sample_rate < 8000:
            raise UserInputError(
                "synth needs at least 1 track per genre, a positive length and a rate of 8 kHz+"
            )
        unknown = set(self.genres) - set(GENRES)
        if unknown:
            raise UserInputError(f"unknown genre(s) {', '.join(sorted(unknown))}; known: {', '.join(GENRES)}")


def track_rng(seed: int, genre: str, index: int) -> np.random.Generator:
    """Each clip has its own stream: clip N is the same whatever else is generated."""
    return np.random.default_rng([seed, GENRES.index(genre), index])


def synthesize_collection(config: SynthConfig, progress: Callable[[str], None] = print) -> list[Path]:
    """Write every clip as 16-bit PCM WAV; returns their paths."""
    if config.out.exists() and any(config.out.iterdir()):
        raise UserInputError(f"OUT {str(config.out)!r} is not empty; choose a new folder")
    written = []
    for genre in config.genres:
        folder = config.out / genre
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(config.tracks_per_genre):
            audio = compose_track(
                genre, config.seconds, config.sample_rate, track_rng(config.seed, genre, index)
            )
            path = folder / f"{genre}.{index:05d}.wav"
            soundfile.write(path, audio, config.sample_rate, subtype="PCM_16")
            written.append(path)
        progress(f"  {genre}: {config.tracks_per_genre} clips")
    return written
