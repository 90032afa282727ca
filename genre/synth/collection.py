"""A labelled collection in GTZAN's layout, `<genre>/<genre>.000NN.wav`, the same bytes per seed."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import groupby
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
    # Processes composing clips at once; 0 = one per CPU core.
    workers: int = 0

    def __post_init__(self) -> None:
        if self.tracks_per_genre < 1 or self.seconds <= 0 or self.sample_rate < 8000:
            raise UserInputError(
                "synth needs at least 1 track per genre, a positive length and a rate of 8 kHz+"
            )
        if self.workers < 0:
            raise UserInputError(f"--workers must be 0 (one per core) or more, not {self.workers}")
        unknown = set(self.genres) - set(GENRES)
        if unknown:
            raise UserInputError(f"unknown genre(s) {', '.join(sorted(unknown))}; known: {', '.join(GENRES)}")


def track_rng(seed: int, genre: str, index: int) -> np.random.Generator:
    """Each clip has its own stream: clip N is the same whatever else is generated."""
    return np.random.default_rng([seed, GENRES.index(genre), index])


def synthesize_collection(config: SynthConfig, progress: Callable[[str], None] = print) -> list[Path]:
    """Write every clip as 16-bit PCM WAV, in parallel processes; returns their paths.

    Each clip has its own random stream, so the bytes do not depend on the number of processes.
    """
    if config.out.exists() and any(config.out.iterdir()):
        raise UserInputError(f"OUT {str(config.out)!r} is not empty; choose a new folder")
    clips = [
        _Clip(genre, index, config.out / genre / f"{genre}.{index:05d}.wav")
        for genre in config.genres
        for index in range(config.tracks_per_genre)
    ]
    for genre in config.genres:
        (config.out / genre).mkdir(parents=True, exist_ok=True)
    workers = min(config.workers or os.cpu_count() or 1, len(clips))
    write = partial(_write_clip, config)
    if workers == 1:
        return _report_genres(map(write, clips), config.tracks_per_genre, progress)
    # spawn, not fork: the caller may hold threads (Ray's) whose locks a forked child would inherit.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        chunk = max(1, len(clips) // (workers * 8))
        return _report_genres(pool.map(write, clips, chunksize=chunk), config.tracks_per_genre, progress)


@dataclass(frozen=True)
class _Clip:
    genre: str
    index: int
    path: Path


def _write_clip(config: SynthConfig, clip: _Clip) -> Path:
    audio = compose_track(
        clip.genre, config.seconds, config.sample_rate, track_rng(config.seed, clip.genre, clip.index)
    )
    soundfile.write(clip.path, audio, config.sample_rate, subtype="PCM_16")
    return clip.path


def _report_genres(written: Iterable[Path], per_genre: int, progress: Callable[[str], None]) -> list[Path]:
    """Collect the paths in order, with a progress line as each genre's last clip is written."""
    paths: list[Path] = []
    for genre, clips in groupby(written, key=lambda path: path.parent.name):
        paths.extend(clips)
        progress(f"  {genre}: {per_genre} clips")
    return paths
