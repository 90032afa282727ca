"""How `genre prepare`'s cost grows with the collection: time, memory and output at 100 to 5,000 tracks.

    python bench/scale.py WORK [--sizes 100,1000,5000] [--seconds 30]

WORK holds the collections and datasets (5,000 thirty-second tracks: 6.6 GB of WAV, 1.7 GB of
log-mels) and is kept, so a second run reuses the audio. The largest collection is written by
`genre synth`; each smaller one is its first N/10 clips per genre, hard-linked: `genre synth`
gives every clip its own random stream, so they are the bytes `genre synth` would write for N.

For each size, `genre prepare` runs as a user runs it (a fresh process that starts its own local
Ray) while a sampler reads, every SAMPLE_S seconds, the memory of the process tree: the driver
alone, and every process of the Ray node it started (raylet, GCS, workers, agents) summed as PSS,
which counts the shared pages of Ray's object store once. Prints one JSON object per size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

GENRE = [sys.executable, "-m", "genre"]
SAMPLE_S = 0.25
MIB = 2**20


@dataclass
class Peaks:
    driver_mib: float = 0.0
    node_mib: float = 0.0
    processes: int = 0


class MemorySampler(threading.Thread):
    """Peak memory of a process (its high-water RSS) and of its whole tree (summed PSS)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peaks = Peaks()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_S):
            try:
                # VmHWM: the kernel's own peak, so a spike between two samples is not missed.
                self.peaks.driver_mib = max(self.peaks.driver_mib, _high_water_mib(self.root.pid))
                tree = [self.root, *self.root.children(recursive=True)]
            except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                return
            total = 0
            for process in tree:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += process.memory_full_info().pss
            if total / MIB > self.peaks.node_mib:
                self.peaks.node_mib, self.peaks.processes = total / MIB, len(tree)


def _high_water_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def make_collections(work: Path, sizes: list[int], seconds: float) -> dict[int, Path]:
    """`genre synth` the largest collection once; the smaller ones are hard-linked prefixes of it."""
    largest = max(sizes)
    source = work / f"synth-{largest}"
    if not (source / "rock" / f"rock.{largest // 10 - 1:05d}.wav").is_file():
        started = time.perf_counter()
        subprocess.run([*GENRE, "synth", str(source), "--tracks-per-genre", str(largest // 10),
                        "--seconds", str(seconds)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        print(json.dumps({"synth_tracks": largest, "synth_s": round(time.perf_counter() - started, 1)}))
    collections = {largest: source}
    for size in sorted(set(sizes) - {largest}):
        target = work / f"synth-{size}"
        for genre_folder in sorted(p for p in source.iterdir() if p.is_dir()):
            (target / genre_folder.name).mkdir(parents=True, exist_ok=True)
            for index in range(size // 10):
                name = f"{genre_folder.name}.{index:05d}.wav"
                if not (target / genre_folder.name / name).exists():
                    os.link(genre_folder / name, target / genre_folder.name / name)
        collections[size] = target
    return collections


def bench_prepare(source: Path, out: Path) -> dict:
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    started = time.perf_counter()
    process = subprocess.Popen([*GENRE, "prepare", str(source), str(out)], stdout=subprocess.DEVNULL)
    sampler = MemorySampler(process.pid)
    sampler.start()
    returncode = process.wait()
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    if returncode != 0:
        raise SystemExit(f"genre prepare {source} failed with exit status {returncode}")
    manifest = json.loads((out / "manifest.json").read_text())
    run = manifest["run"]
    files = [p for p in out.rglob("*") if p.is_file()]
    return {
        "tracks": manifest["counts"]["total"]["tracks"],
        "segments": manifest["counts"]["total"]["segments"],
        "audio_h": round(run["audio_seconds"] / 3600, 2),
        "wall_s": round(wall, 1),
        "audio_s_per_s": round(run["audio_seconds"] / wall),
        "inside_prepare_s": run["wall_seconds"],
        "inside_audio_s_per_s": run["audio_seconds_per_second"],
        "driver_peak_mib": round(sampler.peaks.driver_mib),
        "node_peak_mib": round(sampler.peaks.node_mib),
        "node_processes": sampler.peaks.processes,
        "output_mib": round(sum(p.stat().st_size for p in files) / MIB, 1),
        "parquet_files": sum(1 for p in files if p.suffix == ".parquet"),
        "input_mib": round(sum(p.stat().st_size for p in source.rglob("*.wav")) / MIB),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("work", type=Path, help="folder for the collections and datasets (kept)")
    parser.add_argument("--sizes", default="100,1000,5000", help="tracks per collection, multiples of 10")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each track")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    if any(size % 10 for size in sizes):
        parser.error("--sizes must be multiples of 10 (ten genres)")
    args.work.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                      f"{psutil.virtual_memory().total / 2**30:.0f} GiB"}))  # fmt: skip
    collections = make_collections(args.work, sizes, args.seconds)
    for size in sizes:
        print(json.dumps(bench_prepare(collections[size], args.work / f"data-{size}")), flush=True)


if __name__ == "__main__":
    main()
