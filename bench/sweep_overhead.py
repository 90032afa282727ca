"""Where a sweep's time goes outside training: one trial from the command to its exit, per phase.

    python bench/sweep_overhead.py DATA [--model cnn3] [--epochs 3] [--six]

Runs `genre sweep DATA OUT --models MODEL --epochs E --pretrained no` as a user runs it (a new
process starting its own local Ray), each output line time-stamped, then a bare PyTorch loop over
the same training windows with the trial's threads. Reports:
- the phases: command -> plan line (imports, Ray's start), -> the trial's start (Tune), -> the
  worker in its loop (the trial's `started_at`: Train's controller, the worker's process and imports,
  the data read), -> the last epoch's end, -> the trial's end (final scoring, best checkpoint),
  -> the table printed (results, plots), -> the command's exit (Ray's shutdown);
- time outside the training loop = wall time - the trial's `train_time_s`;
- per epoch: validation and report (with its checkpoint) against the epoch's training time
  (history.parquet's `validate_s`, `report_s`, `train_s`);
- with --six, a second sweep of all six models for one epoch: how far apart the trials started.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import pandas as pd
from timed_sweep import timed_sweep
from train_overhead import bare_loop


def one_trial(data: Path, model: str, epochs: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        options = [str(data), str(out), "--models", model, "--epochs", str(epochs),
                   "--batch-size", str(batch), "--pretrained", "no"]  # fmt: skip
        sweep = timed_sweep(options)
        if sweep.exit_code != 0:
            raise SystemExit("\n".join(line for _, line in sweep.lines[-30:]))
        row = pd.read_parquet(out / "results.parquet").iloc[0]
        history = pd.read_parquet(out / "history.parquet")
    phases = sweep.phases()
    in_loop = float(row["started_at"]) - sweep.started_at
    last_epoch = sweep.all(contains=f" epoch {epochs}/")[-1]
    train = float(row["train_time_s"])
    epochs_after_first = history.iloc[1:] if len(history) > 1 else history
    per_epoch = (epochs_after_first["validate_s"] + epochs_after_first["report_s"]) / epochs_after_first[
        "train_s"
    ]
    return {
        "wall_s": round(sweep.wall_s, 1),
        "train_time_s": round(train, 2),
        "outside_training_s": round(sweep.wall_s - train, 1),
        "phases": {
            "imports_and_ray_start": phases["to_plan_s"],
            "to_trial_start": round(phases["first_trial_start_s"] - phases["to_plan_s"], 2),
            "trial_start_to_worker_loop": round(in_loop - phases["first_trial_start_s"], 2),
            "worker_loop_to_last_epoch_line": round(last_epoch - in_loop, 2),
            "last_epoch_to_trial_finished": round(phases["last_trial_finished_s"] - last_epoch, 2),
            "trial_finished_to_table": round(phases["table_printed_s"] - phases["last_trial_finished_s"], 2),
            "table_to_exit": round(sweep.wall_s - phases["table_printed_s"], 2),
        },
        "per_epoch_s": history[["train_s", "validate_s", "report_s"]].round(3).to_dict("records"),
        "validation_and_report_over_training": round(float(per_epoch.mean()), 3),
        "trial_samples_per_s": round(float(row["samples_per_s"]), 1),
        "threads": json.loads(row["config"]).get("torch_threads", 1),
    }


def six_starts(data: Path) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        sweep = timed_sweep([str(data), str(Path(folder) / "run"), "--epochs", "1", "--pretrained", "no"])
    starts = sweep.all(contains=") started")
    return {
        "wall_s": round(sweep.wall_s, 1),
        "trial_starts_s": [round(t, 1) for t in starts],
        "last_start_after_first_s": round(starts[-1] - starts[0], 1) if starts else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", default="cnn3")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--six", action="store_true", help="also time the six trials' starts")
    args = parser.parse_args()
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "model": args.model}
    report["sweep"] = one_trial(args.data, args.model, args.epochs, args.batch_size)
    bare = bare_loop(args.data, args.model, args.epochs, args.batch_size, report["sweep"]["threads"], seed=0)
    report["bare_samples_per_s"] = round(bare, 1)
    report["trial_over_bare"] = round(report["sweep"]["trial_samples_per_s"] / bare, 3)
    if args.six:
        report["six_trials"] = six_starts(args.data)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
