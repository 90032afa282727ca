"""`genre demo`: the main job on a fresh machine, on generated music: synth -> prepare -> sweep."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.prepare import PrepareConfig, prepare
from data_pipeline.ray_connect import connect_ray
from data_pipeline.storage import open_storage
from genre.config import DemoConfig, TrainConfig
from genre.models import model_names
from genre.sweep.driver import SweepConfig, SweepResult, run_sweep
from genre.sweep.lock import LOCK_NAME, holding_lock
from genre.synth import SynthConfig, synthesize_collection

Progress = Callable[[str], None]


@dataclass
class DemoResult:
    sweep: SweepResult
    stage_seconds: dict[str, float]


def run_demo(config: DemoConfig, progress: Progress = print) -> DemoResult:
    """Generate the audio, prepare it with Ray Data, sweep the models with Ray Tune."""
    # Locked first: a demo already running in OUT is named as such, not as a folder that is not empty.
    with holding_lock(open_storage(config.out.resolve()), f"OUT {str(config.out)!r}", "genre demo", progress):
        if any(entry.name != LOCK_NAME for entry in config.out.iterdir()):
            raise UserInputError(f"OUT {str(config.out)!r} is not empty; remove it or name another folder")
        return _run_stages(config, progress)


def _run_stages(config: DemoConfig, progress: Progress) -> DemoResult:
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
    connect_ray(config.address, worker_logs=False)
    features = FeatureConfig(n_mels=config.n_mels)
    prepared = prepare(PrepareConfig(source=audio, out=data, features=features, seed=config.seed), progress)
    progress(prepared.summary())
    seconds["prepare"] = time.perf_counter() - started

    started = time.perf_counter()
    models = config.models or tuple(model_names())
    progress(f"3/3 sweep: {', '.join(models)} for {config.epochs} epoch(s) -> {run}")
    train = TrainConfig(
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        pretrained="no",  # no download in a demo: ImageNet VGG11 alone is 500 MB
        seed=config.seed,
    )
    result = run_sweep(
        SweepConfig(data=data, out=run, models=models, train=train, address=config.address), progress
    )
    seconds["sweep"] = time.perf_counter() - started
    return DemoResult(result, seconds)
