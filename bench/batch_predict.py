"""Files per second of `genre predict`'s Ray Data path against today's threaded Predictor.predict_files, on
the same files and model, and with 1 and 2 model actors.

    python bench/batch_predict.py WORK [--clips 60] [--seconds 30] [--model cnn4] [--actors 1,2]
                                       [--ray-cpus N] [--repeats 1]

WORK gets a folder of `--clips` clips of `--seconds` (tests/audio_factory.make_clip, made once) and a
checkpoint of an untrained `--model` on the default features (128 mel bands, 3 s windows, 10 genres):
speed does not depend on what the weights learned. Each path predicts every clip on the CPU:

- threaded: one Predictor in this process (its model loaded first, not timed), predict_files;
- ray-N: batch_predict (genre/batch_predict/job.py) with N actors, into a fresh Parquet file, timed
  end to end as a user waits for it, the actors' start included; the Ray of its own is started before
  (not timed), with `--ray-cpus` logical CPUs (default: the machine's; 2 actors on 2 cores need 3, to
  leave one to the decoding tasks as the planner requires).

Prints a Markdown table, the best of `--repeats`: seconds and files per second end to end; for the Ray
paths also when the first rows came back (the actors' start, mostly) and the files per second from
then to the last rows (read from the job's progress lines, one per 10 %).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.audio_factory

GENRES = 10
PROGRESS = re.compile(r"^\s+(\d+)/\d+ files, ")


def make_clips(folder: Path, count: int, seconds: float) -> list[Path]:
    from tests.audio_factory import make_clip

    paths = [folder / f"clip{i:04d}.wav" for i in range(count)]
    for seed, path in enumerate(paths):
        if not path.exists():
            make_clip(path, seconds, seed=seed)
    return paths


def make_checkpoint(path: Path, model_name: str) -> str:
    """An untrained model's checkpoint on the default features, as a sweep writes one."""
    from data_pipeline.features import FeatureConfig
    from genre.config import TrainConfig, TrialConfig
    from genre.models import create_model, get_spec
    from genre.train.checkpoints import save_best

    config = TrialConfig.resolve(TrainConfig(pretrained="no"), model_name, get_spec(model_name).defaults)
    model = create_model(model_name, num_classes=GENRES, dropout=config.dropout)
    labels = {str(i): f"genre{i}" for i in range(GENRES)}
    features = FeatureConfig().to_dict()
    return save_best(str(path), model, config=config, features=features, labels=labels, epoch=0, metrics={})


def time_threaded(checkpoint: str, clips: list[Path]) -> Timing:
    from genre.predict import Predictor

    predictor = Predictor(checkpoint, "cpu")
    started = time.perf_counter()
    predictions = list(predictor.predict_files(clips))
    elapsed = time.perf_counter() - started
    assert len(predictions) == len(clips) and not any(p.error for p in predictions)
    return Timing(elapsed)


@dataclass(frozen=True)
class Timing:
    seconds: float  # end to end
    first_rows_s: float | None = None  # until the first rows came back (the actors' start, mostly)
    steady: float | None = None  # files per second from the first rows to the last


def time_ray(checkpoint: str, folder: Path, clips: list[Path], actors: int, work: Path) -> Timing:
    from genre.batch_predict.job import BatchPredictConfig, batch_predict

    out = work / f"ray-{actors}.parquet"
    out.unlink(missing_ok=True)
    shutil.rmtree(out.with_name(f"{out.name}.parts"), ignore_errors=True)  # an earlier run's, stopped
    config = BatchPredictConfig((str(folder),), checkpoint, out, device="cpu", actors=actors)
    arrivals: list[tuple[float, int]] = []  # (when, files done) from the job's progress lines

    def record(line: str) -> None:
        done = PROGRESS.match(line)
        if done:
            arrivals.append((time.perf_counter(), int(done.group(1))))

    started = time.perf_counter()
    result = batch_predict(config, progress=record)
    elapsed = time.perf_counter() - started
    assert result.table.num_rows == len(clips) and not result.errors
    (first_at, first_done), (last_at, last_done) = arrivals[0], arrivals[-1]
    steady = (last_done - first_done) / (last_at - first_at) if last_at > first_at else None
    return Timing(elapsed, first_at - started, steady)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("work", type=Path)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--model", default="cnn4")
    parser.add_argument("--actors", default="1,2")
    parser.add_argument("--ray-cpus", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    folder = args.work / f"clips-{args.clips}x{args.seconds:g}s"  # the folder holds exactly these
    clips = make_clips(folder, args.clips, args.seconds)
    checkpoint = make_checkpoint(args.work / f"{args.model}.pt", args.model)

    timings: dict[str, Timing] = {}
    timings["threaded"] = min(
        (time_threaded(checkpoint, clips) for _ in range(args.repeats)), key=lambda t: t.seconds
    )
    import ray

    from data_pipeline.loopback import keep_local_ray_on_loopback

    keep_local_ray_on_loopback()
    ray_started = time.perf_counter()
    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, logging_level="WARNING")
    ray_start_s = time.perf_counter() - ray_started
    try:
        for actors in (int(a) for a in args.actors.split(",")):
            timings[f"ray-{actors}"] = min(
                (time_ray(checkpoint, folder, clips, actors, args.work) for _ in range(args.repeats)),
                key=lambda t: t.seconds,
            )
    finally:
        ray.shutdown()

    print(
        f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
        f"{args.clips} clips x {args.seconds:g} s, {args.model} untrained, 128x130 windows; "
        f"Ray started in {ray_start_s:.1f} s (not counted)\n"
    )
    print("| path | seconds | files/s | first rows after (s) | files/s after the first rows |")
    print("|---|---:|---:|---:|---:|")
    for name, timing in timings.items():
        first = "" if timing.first_rows_s is None else f"{timing.first_rows_s:.1f}"
        steady = "" if timing.steady is None else f"{timing.steady:.1f}"
        print(f"| {name} | {timing.seconds:.1f} | {args.clips / timing.seconds:.1f} | {first} | {steady} |")


if __name__ == "__main__":
    main()
