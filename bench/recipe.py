"""The study's training recipe against one found by a search, on real music, by cross-validation.

    python bench/recipe.py AUDIO WORK [--model cnn4] [--epochs 15] [--samples 12] [--seeds 2]
                           [--folds 5] [--n-mels 64] [--search-concurrency 2]

Every step is a `genre` command as a user runs it (a step whose output is already in WORK is read, not
run again):
1. `genre prepare` twice: AUDIO on one fixed split by track (the search's), and in --folds folds (the
   comparison's).
2. The search: `genre sweep --search optuna --num-samples N` over the recipe and augmentation options
   (SEARCH_SPACE), on the fixed split; the best configuration is the one with the highest validation
   track accuracy (its test split is never looked at to choose).
3. Both recipes by `genre sweep --cv --seeds S`: each trial tests on a fold no trial trained on.
Then it prints both recipes' test track accuracy over folds x seeds with 95% intervals, the paired
difference (Nadeau & Bengio's corrected resampled t-test), both on the fixed split's untouched test
tracks, and the seconds each step took.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from genre.sweep import summary

# The study's recipe: Adam at a constant 1e-4, batch 16, no weight decay, no augmentation.
STUDY = {"lr": 1e-4, "batch_size": 16, "optimizer": "adam", "lr_schedule": "constant", "augment": "study"}
# What the search may change: the optimizer's rate and schedule, regularisation and augmentation.
SEARCH_SPACE = {
    "lr": {"loguniform": [1.0e-4, 1.0e-2]},
    "batch_size": {"choice": [16, 32]},
    "optimizer": {"choice": ["adam", "adamw"]},
    "weight_decay": {"choice": [0.0, 1.0e-4, 1.0e-2]},
    "lr_schedule": {"choice": ["constant", "cosine", "onecycle"]},
    "dropout": {"uniform": [0.1, 0.5]},
    "label_smoothing": {"choice": [0.0, 0.1]},
    "augment": {"choice": ["study", "light", "strong"]},
}
# The searched settings that `genre sweep` takes as flags, and the flag of each.
FLAGS = {name: "--" + name.replace("_", "-") for name in SEARCH_SPACE}


def genre(*arguments: str) -> float:
    """Run one `genre` command; its wall-clock seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "genre", *arguments], check=True)
    return time.perf_counter() - started


def step(done: Path, *arguments: str) -> float | None:
    """Run the command unless `done` exists (an earlier run's output); its seconds, or None if skipped."""
    return None if done.exists() else genre(*arguments)


def best_configuration(search: Path) -> dict[str, object]:
    """The searched trial with the highest validation track accuracy (then segment accuracy)."""
    table = pd.read_parquet(search / "results.parquet")
    completed = table[table["status"] == "completed"]
    best = completed.sort_values(["val_track_accuracy", "val_segment_accuracy"], ascending=False).iloc[0]
    return {**json.loads(best["sampled"]), "val_track_accuracy": float(best["val_track_accuracy"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--model", default="cnn4")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--samples", type=int, default=12)
    # Optuna's TPE proposes from the trials it has seen: two at once, not all twelve blind.
    parser.add_argument("--search-concurrency", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n-mels", type=int, default=64)
    options = parser.parse_args()
    work: Path = options.work
    work.mkdir(parents=True, exist_ok=True)
    features = ["--n-mels", str(options.n_mels)]
    fixed, folded = work / "data-split", work / "data-folds"
    seconds: dict[str, float | None] = {
        "prepare (split)": step(fixed, "prepare", str(options.audio), str(fixed), *features),
        "prepare (folds)": step(
            folded, "prepare", str(options.audio), str(folded), "--folds", str(options.folds), *features
        ),
    }

    common = ["--models", options.model, "--epochs", str(options.epochs), "--pretrained", "no"]
    config = work / "search.yaml"
    config.write_text(yaml.safe_dump({"search": SEARCH_SPACE}, sort_keys=False))
    search = work / "search"
    seconds["search"] = step(
        search / "results.parquet", "sweep", str(fixed), str(search), *common, "--config", str(config),
        "--search", "optuna", "--num-samples", str(options.samples),
        "--max-concurrent", str(options.search_concurrency),
    )  # fmt: skip
    best = best_configuration(search)
    recipes = {"study": STUDY, "searched": {k: v for k, v in best.items() if k in FLAGS}}

    tables = []
    for name, recipe in recipes.items():
        flags = [item for key, value in recipe.items() for item in (FLAGS[key], str(value))]
        for data, protocol in ((folded, ["--cv", "--seeds", str(options.seeds)]), (fixed, [])):
            out = work / f"{name}-{'cv' if protocol else 'split'}"
            label = f"{name} ({'cv' if protocol else 'split'})"
            arguments = ("sweep", str(data), str(out), *common, *flags, *protocol)
            seconds[label] = step(out / "results.parquet", *arguments)
            tables.append(pd.read_parquet(out / "results.parquet").assign(model=name, protocol=label))
    table = pd.concat(tables, ignore_index=True)

    print(f"searched recipe (validation track accuracy {best['val_track_accuracy']:.3f}):")
    print(json.dumps(recipes["searched"], indent=None))
    cv = table[table["protocol"].str.endswith("(cv)")]
    pairs = summary.compare_pairs(cv, test_train_ratio=summary.cv_test_train_ratio(options.folds))
    protocol = summary.protocol_text(options.folds, options.seeds, "by track, stratified by genre")
    print(summary.summary_markdown(summary.summarize(cv), pairs, protocol))
    split = table[table["protocol"].str.endswith("(split)")]
    print("\nthe fixed split's test tracks, never used to choose:")
    columns = ["model", "test_track_accuracy", "test_segment_accuracy", "train_time_s"]
    print(split[columns].to_string(index=False))
    print("\nseconds per step (None: read from an earlier run):")
    print(json.dumps({k: None if v is None else round(v) for k, v in seconds.items()}, indent=1))
    trials = pd.read_parquet(search / "results.parquet")
    print(f"search: {len(trials)} trials, {trials['train_time_s'].sum():.0f} s of training in all")


if __name__ == "__main__":
    main()
