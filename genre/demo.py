"""`genre demo`: the main job on a fresh machine, on generated music: synth -> prepare -> sweep."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.prepare import PrepareConfig, prepare
from data_pipeline.ray_connect import connect_ray
from genre.config import TrainConfig
from genre.models import model_names
from genre.sweep import SweepConfig, SweepResult, run_sweep
from genre.synth import SynthConfig, synthesize_collection

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    """Sized to finish in minutes on two CPU cores while still telling the models apart."""

    out: Path = Path("genre-demo")
    tracks_per_genre: int = 12
    seconds: float = 12.0
    # 64 mel bands over 3 s windows (64 x 130): half the study-like input, a quarter of the time.
    n_mels: int = 64
    epochs: int = 4
    # A few epochs on a few hundred segments need a faster rate than the study's 1e-4 over 15.
    lr: float = 1e-3
    batch_size: int = 16
    models: tuple[str, ...] = field(default_factory=lambda: tuple(model_names()))
    seed: int = 0
    address: str | None = None


@dataclass
class DemoResult:
    sweep: SweepResult
    stage_seconds: dict[str, float]


def run_demo(config: DemoConfig, progress: Progress = print) -> DemoResult:
    """Generate the audio, prepare it with Ray Data, sweep the models with Ray Tune."""
    if config.out.exists() and any(config.out.iterdir()):
        raise UserInputError(f"OUT {str(config.out)!r} is not empty; remove it or name another folder")
    audio, data, run = config.out / "audio", config.out / "data", config.out / "run"
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    progress(f"1/3 synth: {config.tracks_per_genre} clips of {config.seconds:g} s per genre -> {audio}")
    synthesize_collection(
        SynthConfig(
            out=audio, tracks_per_genre=config.tracks_per_genre, seconds=config.seconds, seed=config.seed
        ),
        progress,
    )
    seconds["synth"] = time.perf_counter() - started

    started = time.perf_counter()
    progress(f"2/3 prepare: log-mel shards with Ray Data -> {data}")
    # One Ray for both stages, started the way the sweep needs it.
    connect_ray(config.address, dashboard=True, worker_logs=False)
    features = FeatureConfig(n_mels=config.n_mels)
    prepared = prepare(PrepareConfig(source=audio, out=data, features=features, seed=config.seed), progress)
    progress(prepared.summary())
    seconds["prepare"] = time.perf_counter() - started

    started = time.perf_counter()
    progress(f"3/3 sweep: {', '.join(config.models)} for {config.epochs} epoch(s) on CPU -> {run}")
    train = TrainConfig(
        model="",
        data="",
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        pretrained="no",  # no download in a demo: ImageNet VGG11 alone is 500 MB
        seed=config.seed,
    )
    result = run_sweep(
        SweepConfig(data=data, out=run, models=config.models, train=train, address=config.address), progress
    )
    seconds["sweep"] = time.perf_counter() - started
    return DemoResult(result, seconds)
