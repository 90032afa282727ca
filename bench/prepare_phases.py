"""Where `genre prepare`'s time goes, phase by phase, and what a Ray that is already running saves.

    python bench/prepare_phases.py SRC [--runs 3]

Each phase is timed apart, in fresh processes, the way `genre prepare` meets it on this machine:
  imports         Python's start and `import genre.cli, data_pipeline.prepare` (the driver's imports)
  ray_init        the start of a local Ray of genre's own (data_pipeline.ray_connect.connect_ray)
  data_first      Ray Data's first execution in it: one trivial task per CPU (Ray Data's own actors,
                  each new worker process and its imports of Ray Data)
  data_second     the same dataset again: what an execution costs once Ray Data is up
  worker_imports  one task per CPU at once, importing torch, torchaudio and building the log-mel
                  transform in those workers (what the first featurizing task of each does)
  ray_shutdown    ray.shutdown() of that Ray (the command waits for it before exiting)
  featurize       SRC's tracks split over one process per CPU, no Ray, warm: decode, log-mel and
                  Parquet only (the floor of the per-track work on this machine)
and end to end, as a user runs it:
  own_ray         `genre prepare SRC OUT` (starts and stops its own Ray)
  running_ray     the same with `--address` of a Ray started before by `ray start --head` (its own
                  temp dir, on loopback, stopped by its processes here, never with `ray stop`)
Prints the medians over --runs as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from data_pipeline.discover import discover
from data_pipeline.features import FeatureConfig
from data_pipeline.featurize import ShardJob, featurize_shard
from data_pipeline.loopback import RAY_CLUSTER_MODE_VARIABLE
from data_pipeline.shards import tracks_per_shard

GENRE = [sys.executable, "-m", "genre"]
RAY_CLI = str(Path(sys.executable).parent / "ray")

# Run in a fresh interpreter: every phase from Python's start to Ray's shutdown, one JSON line.
PHASES_SCRIPT = """
import json, time
started = time.perf_counter()
import genre.cli, data_pipeline.prepare
from data_pipeline.ray_connect import connect_ray
times = {"imports": time.perf_counter() - started}
import ray

def timed(name, action):
    mark = time.perf_counter()
    action()
    times[name] = time.perf_counter() - mark

def trivial_dataset():
    cpus = int(ray.cluster_resources()["CPU"])
    ray.data.from_items(list(range(cpus)), override_num_blocks=cpus).map(
        lambda row: row, num_cpus=1
    ).materialize()

def warm_imports():
    import torch, torchaudio
    from data_pipeline.featurize import _extractor
    from data_pipeline.features import FeatureConfig
    _extractor(FeatureConfig())

timed("ray_init", connect_ray)
timed("data_first", trivial_dataset)
timed("data_second", trivial_dataset)
cpus = int(ray.cluster_resources()["CPU"])
timed("worker_imports", lambda: ray.get([ray.remote(num_cpus=1)(warm_imports).remote() for _ in range(cpus)]))
timed("ray_shutdown", ray.shutdown)
print(json.dumps(times))
"""


def phases() -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", PHASES_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env=_no_ray_address(),
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _warm_worker() -> None:
    import torch

    torch.set_num_threads(1)
    featurize_shard({"shard": -1, "tracks": "[]"}, _JOB)  # imports and the transform, once


_JOB: ShardJob | None = None


def _init_worker(job: ShardJob) -> None:
    global _JOB
    _JOB = job
    _warm_worker()


def _featurize(shard: dict) -> int:
    return len(featurize_shard(shard, _JOB))


def featurize_floor(source: Path, workdir: Path, cpus: int) -> float:
    """Seconds for one process per CPU, started and warm beforehand, to featurize every track of SRC."""
    tracks = discover(source).tracks
    labels = {genre: index for index, genre in enumerate(sorted({t.genre for t in tracks}))}
    job = ShardJob(FeatureConfig(), str(workdir / "floor"), "track", 0, (0.6, 0.2, 0.2), labels)
    size = tracks_per_shard(len(tracks), cpus)
    shards = [
        {
            "shard": index,
            "tracks": json.dumps([{**t.__dict__, "split": "train"} for t in tracks[i : i + size]]),
        }
        for index, i in enumerate(range(0, len(tracks), size))
    ]
    with multiprocessing.get_context("spawn").Pool(cpus, initializer=_init_worker, initargs=(job,)) as pool:
        pool.map(abs, range(cpus * 4))  # every process up and warm before the clock starts
        started = time.perf_counter()
        count = sum(pool.map(_featurize, shards, chunksize=1))
        seconds = time.perf_counter() - started
    assert count == len(tracks), (count, len(tracks))
    return seconds


def end_to_end(source: Path, out: Path, address: str | None = None) -> float:
    command = [*GENRE, "prepare", str(source), str(out), "--overwrite"]
    if address:
        command += ["--address", address]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=_no_ray_address())
    return time.perf_counter() - started


@contextlib.contextmanager
def running_ray(cpus: int):
    """`ray start --head` on loopback with a temp dir of its own; its processes are killed after."""
    temp_dir = tempfile.mkdtemp(prefix="genre-bench-ray-", dir="/tmp")  # Ray's socket paths must be short
    port = _free_port()
    env = {**_no_ray_address(), RAY_CLUSTER_MODE_VARIABLE: "0"}  # loopback only, as cluster/local-head.sh
    subprocess.run(
        [RAY_CLI, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}",
         "--include-dashboard=false", f"--temp-dir={temp_dir}", f"--ray-client-server-port={_free_port()}",
         f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}"],
        check=True, capture_output=True, env=env, timeout=180,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _kill_processes_of(temp_dir)


def _kill_processes_of(temp_dir: str) -> None:
    roots = [p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])]
    family = {p.pid: p for p in roots}
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            family.update({child.pid: child for child in root.children(recursive=True)})
    for process in family.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _no_ray_address() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    samples: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        samples.setdefault(name, []).append(seconds)

    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        for _ in range(args.runs):
            for name, seconds in phases().items():
                record(name, seconds)
            record("featurize", featurize_floor(args.source, workdir, cpus))
            record("own_ray", end_to_end(args.source, workdir / "own"))
        with running_ray(cpus) as address:
            for _ in range(args.runs):
                record("running_ray", end_to_end(args.source, workdir / "running", address))
        tracks = len(discover(args.source).tracks)
    report = {
        "machine": f"{platform.machine()}, {cpus} cores, {platform.platform()}",
        "tracks": tracks,
        "runs": args.runs,
        "median_s": {name: round(statistics.median(values), 2) for name, values in samples.items()},
        "all_s": {name: [round(v, 2) for v in values] for name, values in samples.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
