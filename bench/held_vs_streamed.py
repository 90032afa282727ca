"""Does a streamed train split train as well as a held one? The same sweep, the same seeds, twice.

    python bench/held_vs_streamed.py WORK [--tracks-per-genre 20] [--seconds 12] [--seeds 3]
        [--model cnn4] [--epochs 12] [--lr 1e-3] [--shuffle-buffer 16]

Generates a collection (`genre synth`), prepares it (64 mel bands), then sweeps MODEL with `--seeds`
seeds twice: the train split held in memory and shuffled whole, and streamed (`--train-in-memory-mib
0`) through a shuffle buffer of `--shuffle-buffer` rows, a small fraction of the split as genre's
2,048 rows are of a large collection's. Prints per seed and mode the train / val / test track
accuracy, and the mean and spread (sample standard deviation) over the seeds, as Markdown. Each
sweep runs in its own `genre` process with its own Ray.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from statistics import mean, stdev

import pandas as pd

SCORES = ("train_track_accuracy", "val_track_accuracy", "test_track_accuracy")
GENRE = [sys.executable, "-m", "genre"]


def genre(*args: str) -> None:
    subprocess.run([*GENRE, *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("work", type=Path, help="a new folder for the audio, the dataset and the runs")
    parser.add_argument("--tracks-per-genre", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--model", default="cnn4")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", default="1e-3")
    parser.add_argument("--shuffle-buffer", type=int, default=16)
    args = parser.parse_args()

    audio, data = args.work / "audio", args.work / "data"
    if not audio.exists():
        genre(
            "synth",
            str(audio),
            "--tracks-per-genre",
            str(args.tracks_per_genre),
            "--seconds",
            str(args.seconds),
        )
    if not data.exists():
        genre("prepare", str(audio), str(data), "--n-mels", "64")
    train_rows = json.loads((data / "manifest.json").read_text())["counts"]["train"]["segments"]
    common = ["--models", args.model, "--seeds", str(args.seeds), "--epochs", str(args.epochs),
              "--lr", args.lr, "--pretrained", "no"]  # fmt: skip
    modes = {
        "held": [],
        "streamed": ["--train-in-memory-mib", "0", "--shuffle-buffer", str(args.shuffle_buffer)],
    }
    tables = {}
    for mode, options in modes.items():
        out = args.work / f"run-{mode}"
        if not (out / "results.parquet").exists():
            subprocess.run([*GENRE, "sweep", str(data), str(out), *common, *options], check=True)
        tables[mode] = pd.read_parquet(out / "results.parquet").sort_values("seed")

    times = train_rows / args.shuffle_buffer
    print(
        f"\n{args.model}, {args.epochs} epochs, lr {args.lr}; train split {train_rows} windows, {times:.0f}x"
    )
    print(f"the streamed buffer of {args.shuffle_buffer} rows\n")
    print("| train split | seed | train / val / test track acc |")
    print("|---|---:|---|")
    for mode, table in tables.items():
        for _, row in table.iterrows():
            print(f"| {mode} | {row['seed']} | " + " / ".join(f"{row[s]:.2f}" for s in SCORES) + " |")
    print("\n| train split | mean (sd) over seeds: train | val | test |")
    print("|---|---|---|---|")
    for mode, table in tables.items():
        cells = [f"{mean(table[s]):.3f} ({stdev(table[s]) if len(table) > 1 else 0:.3f})" for s in SCORES]
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
