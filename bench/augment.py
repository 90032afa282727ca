"""What each augmentation bundle does to held-out accuracy: one sweep per bundle, the same seeds.

    python bench/augment.py DATA WORK [--model cnn4] [--epochs 15] [--seeds 3] [--bundles study,light,strong]

Runs `genre sweep DATA WORK/<bundle> --models MODEL --epochs E --seeds N --augment <bundle>` for each
bundle as a user runs it (a sweep already finished in WORK/<bundle> is read, not run again), then
prints per bundle the test accuracy (track and segment) over the seeds with 95% intervals, and each
pair of bundles compared on the same seeds (genre.sweep.summary: paired t-test, Holm-adjusted).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from genre.sweep import summary


def run_bundle(data: Path, out: Path, bundle: str, options: argparse.Namespace) -> pd.DataFrame:
    if not (out / "results.parquet").is_file():
        command = [sys.executable, "-m", "genre", "sweep", str(data), str(out), "--models", options.model,
                   "--epochs", str(options.epochs), "--seeds", str(options.seeds), "--augment", bundle,
                   "--pretrained", "no"]  # fmt: skip
        subprocess.run(command, check=True)
    table = pd.read_parquet(out / "results.parquet")
    # Each bundle as a "model" of its own: genre.sweep.summary then pairs the bundles on the same seeds.
    return table.assign(model=bundle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--model", default="cnn4")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--bundles", default="study,light,strong")
    options = parser.parse_args()
    tables = [run_bundle(options.data, options.work / b, b, options) for b in options.bundles.split(",")]
    table = pd.concat(tables, ignore_index=True)
    per_bundle = summary.summarize(table)
    pairs = summary.compare_pairs(table)
    print(summary.summary_markdown(per_bundle, pairs, summary.protocol_text(None, options.seeds, "by track")))
    print()
    print(table.pivot_table(index="seed", columns="model", values="test_track_accuracy").round(3).to_string())


if __name__ == "__main__":
    main()
