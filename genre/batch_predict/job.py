"""The driver of `genre predict SOURCE --out FILE`: lists the files, skips those FILE.parts/ holds, runs
decoding tasks and model actors on Ray Data, writes the rows as they come and FILE at the end; runs in the
`genre` process."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from genre.batch_predict.output import check_out, write_output
from genre.batch_predict.parts import JobRecord, PartsFolder, PartWriter
from genre.batch_predict.plan import plan_scorers
from genre.batch_predict.sources import SourceFile, list_sources, no_audio_message
from genre.train.checkpoints import CheckpointBytes, check_finite_weights, load_checkpoint, read_checkpoint

Progress = Callable[[str], None]
# Files per decoding task: a few, so that tasks spread over the cluster and a slow file holds back few.
FILES_PER_DECODE_TASK = 8
# At most this many decoding tasks: the files of a huge SOURCE go a few more to a task.
MAX_DECODE_TASKS = 2000


@dataclass(frozen=True)
class BatchPredictConfig:
    """Everything one batch prediction needs; the CLI builds it."""

    sources: tuple[str, ...]
    checkpoint: str  # a path or URI: read here, handed to the actors as bytes
    out: Path
    address: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    actors: int | None = None  # None: by the cluster (plan.plan_scorers)


@dataclass
class BatchPredictResult:
    """What a finished run wrote: FILE's rows, how many this run predicted, and what it cost."""

    out: Path
    table: pa.Table
    model: str
    predicted_now: int
    seconds: float
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def predicted(self) -> int:
        """Files with a genre (rows without an error)."""
        return self.table.num_rows - len(self.errors)


def batch_predict(config: BatchPredictConfig, progress: Progress = print) -> BatchPredictResult:
    """Predict every file the SOURCEs name into FILE; rerun after an interruption, it predicts the rest."""
    started = time.perf_counter()
    check_out(config.out)
    checkpoint = read_checkpoint(config.checkpoint)
    model, features = _model_and_features(checkpoint)
    files = list_sources(config.sources)
    if not files:
        raise UserInputError(no_audio_message(config.sources))
    parts = PartsFolder(config.out)
    record = JobRecord.of(model, checkpoint)
    done = parts.open(record)
    todo = [f for f in files if f.path not in done]
    already = f", {len(files) - len(todo)} done already in {parts.folder}" if done else ""
    progress(f"predict: {len(files)} files with {model} ({record.checkpoint}){already}")
    if todo:
        _run(todo, checkpoint, features, config, parts, progress, started)
    table = parts.read()
    table = table.take(pc.sort_indices(table, [("path", "ascending")]))
    write_output(table, config.out)
    parts.remove()
    errors = [
        (path, error)
        for path, error in zip(table["path"].to_pylist(), table["error"].to_pylist(), strict=True)
        if error
    ]
    return BatchPredictResult(config.out, table, model, len(todo), time.perf_counter() - started, errors)


def _model_and_features(checkpoint: CheckpointBytes) -> tuple[str, FeatureConfig]:
    """The checkpoint's model name and features, its weights checked here before any actor loads them."""
    payload = load_checkpoint(checkpoint)
    check_finite_weights(payload, checkpoint.location)
    return payload["model"], FeatureConfig.from_dict(payload["features"])


def _run(
    todo: list[SourceFile],
    checkpoint: CheckpointBytes,
    features: FeatureConfig,
    config: BatchPredictConfig,
    parts: PartsFolder,
    progress: Progress,
    started: float,
) -> None:
    import ray

    from data_pipeline.ray_connect import connect_ray
    from genre.batch_predict.decode import decode_rows
    from genre.batch_predict.scorer import FileScorer

    connect_ray(config.address)
    resources = ray.cluster_resources()
    plan = plan_scorers(
        resources.get("CPU", 1.0), resources.get("GPU", 0.0), config.device, config.batch_size, config.actors
    )
    where = f"{plan.actor_gpus:g} GPU" if plan.device == "cuda" else f"{plan.actor_cpus:g} CPU"
    progress(f"  {len(todo)} files to predict: {plan.actors} model actor(s) of {where} each")
    items = [{"location": f.location, "path": f.path} for f in todo]
    tasks = min(len(items), MAX_DECODE_TASKS, math.ceil(len(items) / FILES_PER_DECODE_TASK))
    with _data_context():
        dataset = (
            ray.data.from_items(items, override_num_blocks=tasks)
            # flat_map, not map: Ray Data fuses a one-row-for-one map into the actors after it (when they
            # ask for the same CPUs), and files would be decoded in the model's actors, between forward
            # passes; a flat_map (whose rows may change in number) stays tasks of its own.
            .flat_map(decode_rows, fn_kwargs={"features": features}, num_cpus=plan.decode_cpus)
            .map_batches(
                FileScorer,
                batch_size=plan.files_per_call(features.segment_seconds),
                compute=ray.data.ActorPoolStrategy(size=plan.actors),
                num_cpus=plan.actor_cpus,
                num_gpus=plan.actor_gpus or None,
                fn_constructor_kwargs={
                    "checkpoint": checkpoint,
                    "device": plan.device,
                    "batch_size": plan.window_batch,
                },
                batch_format="numpy",
            )
        )
        writer = PartWriter(parts)
        finished, step = 0, max(1, len(todo) // 10)
        # Closed on the way out, whatever stopped the run: Ray Data then stops its tasks and actors at once.
        blocks = closing(iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow")))
        try:
            with blocks as arriving:
                for block in arriving:
                    writer.add(block)
                    before, finished = finished, finished + block.num_rows
                    if finished // step > before // step or finished == len(todo):
                        progress(f"  {finished}/{len(todo)} files, {time.perf_counter() - started:.1f} s")
        finally:
            writer.flush()  # the rows that came are finished, whatever stopped the run


@contextmanager
def _data_context() -> Iterator[None]:
    """Ray Data settings for this one pipeline, restored afterwards."""
    import ray

    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars
    context.enable_progress_bars = False  # progress is printed here, one line per 10%
    try:
        yield
    finally:
        context.enable_progress_bars = saved
