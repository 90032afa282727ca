"""Benchmark `genre prepare` against a librosa loop and the 2021 study's PNG pipeline.

Run by hand (needs the bench extra: pip install -e '.[bench]'):

    python bench/prepare.py ../shared/gtzan-sample --repeat 14

Reports audio seconds processed per wall second for
  prepare  `genre prepare SRC OUT` as a user runs it (process start and Ray's start included),
           and the same with --address of a Ray started before (prepare_running_ray),
  librosa  a plain single-process loop: librosa.load, then librosa's mel of every 3 s window,
  study    the 2021 study's method: librosa mel (288 bands) drawn into a 432x288 PNG per window,
and where `prepare`'s time goes: Ray start, then decode, log-mel and Parquet per core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from prepare_phases import running_ray  # bench/prepare_phases.py, beside this script

from data_pipeline.audio import is_audio_path, load_mono
from data_pipeline.features import FeatureConfig, LogMelExtractor
from data_pipeline.shards import segments_table, write_shard

FEATURES = FeatureConfig()
# The study drew each window with matplotlib at 6x4 inches, 72 dpi: 432x288 pixels.
STUDY_FIGSIZE, STUDY_DPI, STUDY_MELS = (6, 4), 72, 288


def audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and is_audio_path(p))


def repeated_source(source: Path, repeat: int, workdir: Path) -> Path:
    """A GTZAN-sized folder of symlinks: every clip `repeat` times, under its genre."""
    if repeat == 1:
        return source
    target = workdir / f"repeat{repeat}"
    for path in audio_files(source):
        genre = path.relative_to(source).parts[0]
        (target / genre).mkdir(parents=True, exist_ok=True)
        for copy in range(repeat):
            (target / genre / f"r{copy:02d}_{path.name}").symlink_to(path.resolve())
    return target


def audio_seconds(files: list[Path]) -> float:
    return sum(soundfile.info(str(f)).duration for f in files)


def bench_prepare(source: Path, workdir: Path, address: str | None = None) -> dict:
    out = workdir / "prepared"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "genre", "prepare", str(source), str(out), "--overwrite",
         *(["--address", address] if address else [])],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.perf_counter() - started
    run = json.loads((out / "manifest.json").read_text())["run"]
    return {"wall_s": wall, "inside_prepare_s": run["wall_seconds"], "audio_s": run["audio_seconds"]}


def librosa_windows(path: Path, n_mels: int):
    import librosa

    samples, rate = librosa.load(path, sr=FEATURES.sample_rate)
    size = FEATURES.segment_samples
    for start in range(0, len(samples) - size + 1, size):
        power = librosa.feature.melspectrogram(
            y=samples[start : start + size],
            sr=rate,
            n_fft=FEATURES.n_fft,
            hop_length=FEATURES.hop_length,
            n_mels=n_mels,
            pad_mode=FEATURES.pad_mode,
        )
        yield librosa.power_to_db(power, ref=np.max, top_db=FEATURES.top_db)


def bench_librosa(files: list[Path]) -> dict:
    # librosa compiles some of its code (numba) on first use: one file untimed first, so the loop
    # is timed at its best.
    sum(1 for _ in librosa_windows(files[0], FEATURES.n_mels))
    started = time.perf_counter()
    windows = sum(1 for path in files for _ in librosa_windows(path, FEATURES.n_mels))
    return {"wall_s": time.perf_counter() - started, "windows": windows}


def bench_study(files: list[Path], workdir: Path) -> dict:
    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = workdir / "study-png"
    images.mkdir(exist_ok=True)
    started = time.perf_counter()
    count = 0
    for path in files:
        for index, decibels in enumerate(librosa_windows(path, STUDY_MELS)):
            figure = plt.figure(figsize=STUDY_FIGSIZE, dpi=STUDY_DPI)
            librosa.display.specshow(decibels, sr=FEATURES.sample_rate, cmap="magma")
            plt.axis("off")
            figure.savefig(images / f"{path.stem}.{index}.png", dpi=STUDY_DPI)
            plt.close(figure)
            count += 1
    return {"wall_s": time.perf_counter() - started, "windows": count}


def stage_costs(files: list[Path], workdir: Path) -> dict:
    """Single-core seconds per audio second of each stage inside a featurizing task."""
    torch.set_num_threads(1)
    extractor = LogMelExtractor(FEATURES)
    decode = mel = write = 0.0
    seconds = 0.0
    for path in files:
        t0 = time.perf_counter()
        waveform, _, _ = load_mono(path, FEATURES.sample_rate)
        t1 = time.perf_counter()
        mels = extractor(waveform).half().numpy()
        t2 = time.perf_counter()
        rows = len(mels)
        table = segments_table(
            [path.name] * rows, range(rows), [0] * rows, ["g"] * rows, ["train"] * rows, mels
        )
        write_shard(table, workdir / "stage.parquet")
        t3 = time.perf_counter()
        decode, mel, write = decode + t1 - t0, mel + t2 - t1, write + t3 - t2
        seconds += waveform.numel() / FEATURES.sample_rate
    return {
        "decode_audio_s_per_s": seconds / decode,
        "logmel_audio_s_per_s": seconds / mel,
        "parquet_audio_s_per_s": seconds / write,
        "all_three_audio_s_per_s": seconds / (decode + mel + write),
    }


def ray_start_seconds() -> float:
    code = (
        "import time,ray;t=time.perf_counter();ray.init(include_dashboard=False);print(time.perf_counter()-t)"
    )
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path)
    parser.add_argument("--repeat", type=int, default=1, help="use every clip this many times")
    parser.add_argument("--methods", default="prepare,librosa,study")
    parser.add_argument(
        "--study-tracks", type=int, default=70, help="time the slow study method on this many tracks"
    )
    args = parser.parse_args()
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        source = repeated_source(args.source.resolve(), args.repeat, workdir)
        files = audio_files(source)
        total = audio_seconds(files)
        report = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "tracks": len(files),
            "audio_s": round(total, 1),
        }
        if "prepare" in methods:
            result = bench_prepare(source, workdir)
            report["prepare"] = {**result, "audio_s_per_s": total / result["wall_s"]}
            report["ray_start_s"] = ray_start_seconds()
            report["stages_single_core"] = stage_costs(audio_files(args.source.resolve()), workdir)
            # The same against a Ray started before (`ray start --head`), as a user keeping one
            # running between commands: no Ray start or shutdown in the command.
            with running_ray(os.cpu_count() or 1) as address:
                result = bench_prepare(source, workdir, address)
            report["prepare_running_ray"] = {**result, "audio_s_per_s": total / result["wall_s"]}
        if "librosa" in methods:
            result = bench_librosa(files)
            report["librosa"] = {**result, "audio_s_per_s": total / result["wall_s"]}
        if "study" in methods:
            subset = files[:: max(1, len(files) // args.study_tracks)][: args.study_tracks]
            result = bench_study(subset, workdir)
            report["study"] = {
                **result,
                "tracks": len(subset),
                "audio_s_per_s": audio_seconds(subset) / result["wall_s"],
            }
        for ours in ("prepare", "prepare_running_ray"):
            for other in ("librosa", "study"):
                if ours in report and other in report:
                    ratio = report[ours]["audio_s_per_s"] / report[other]["audio_s_per_s"]
                    report[f"{ours}_over_{other}"] = round(ratio, 2)
    print(json.dumps(report, indent=2, default=lambda v: round(v, 3)))


if __name__ == "__main__":
    main()
