"""`genre demo`: the main job on a fresh machine, on generated music: synth -> prepare -> sweep."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    import pandas as pd

Progress = Callable[[str], None]

# A model under this test track accuracy (chance: 0.1) has learned little in the demo's epochs: the
# note under the table names it, with what holds it back when it starts from random weights.
LEARNED = 0.5
FROM_SCRATCH = {
    "cnn3": "no batch norm",
    "cnn4_gru": "a GRU too",
    "efficientnet_b0": "ImageNet-sized",
    "efficientnet_b0_gru": "ImageNet-sized",
    "vgg11": "ImageNet-sized, no batch norm",
}


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
    features = FeatureConfig(n_mels=config.n_mels, hop_length=config.hop_length)
    prepared = prepare(PrepareConfig(source=audio, out=data, features=features, seed=config.seed), progress)
    progress(prepared.summary())
    seconds["prepare"] = time.perf_counter() - started

    started = time.perf_counter()
    models = config.models or tuple(model_names())
    epochs = {model: config.epochs_of(model) for model in models}
    said = ", ".join(f"{model} {n}" for model, n in epochs.items())
    progress(f"3/3 sweep: epochs {said} -> {run}")
    longest = max(epochs.values())
    train = TrainConfig(
        epochs=longest,
        lr=config.lr,
        lr_schedule=config.lr_schedule,
        optimizer=config.optimizer,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        pretrained="no",  # no download in a demo: ImageNet VGG11 alone is 500 MB
        seed=config.seed,
    )
    per_model = config.per_model(models)
    sweep = SweepConfig(
        data=data, out=run, models=models, train=train, per_model=per_model or None, address=config.address
    )
    result = run_sweep(sweep, progress)
    seconds["sweep"] = time.perf_counter() - started
    return DemoResult(result, seconds)


def slow_learners_note(table: pd.DataFrame) -> str | None:
    """One line naming the models under LEARNED test track accuracy, with their epochs and what holds
    them back; None when there are none."""
    scored = table.dropna(subset=["test_track_accuracy"])
    slow = scored[scored["test_track_accuracy"] < LEARNED]
    if slow.empty:
        return None
    named = ", ".join(
        f"{row.model} ({row.epochs:.0f} epoch{'s' if row.epochs != 1 else ''}; "
        f"{FROM_SCRATCH.get(row.model, 'from scratch')})"
        for row in slow.itertuples()
    )
    return (
        f"note: little learned from random weights on a CPU in the demo's minutes by {named}; "
        "with ImageNet weights on a GPU they lead (docs/demo.md); --epochs trains every model longer"
    )
