"""What each fault costs in wall time: the same `genre` command with and without it.

    python bench/faults.py WORK [--epochs 3]

In WORK (kept): `genre synth` writes 5 clips of 6 s per genre and `genre prepare` makes them 64-band
1.5 s windows, as the fault tests use. Then, each as a user runs it (a fresh process, its own Ray):
  worker    `genre sweep --models cnn3`, its Train worker SIGKILLed in the middle of epoch 1;
  raise     the same trial raising an exception at epoch 1 (an error row after one restart);
  sweep     `genre sweep --models cnn3,cnn4 --max-concurrent 1` SIGKILLed in cnn4's epoch 1,
            then the same command with --resume;
  prepare   `genre prepare --tracks-per-shard 1` SIGKILLed after its first shard, then rerun;
each next to the same command without the fault. The faults are the hidden `--inject-fault`
hooks the tests use (a `pause` writes the worker's pid and waits to be killed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

GENRE = [sys.executable, "-m", "genre"]


def run(command: list[str], kill_when: Callable[[], int | None] | None = None, exit_status: int = 0) -> float:
    """Wall seconds of `genre COMMAND`; with `kill_when`, SIGKILL the pid it returns (0: the command)."""
    started = time.perf_counter()
    process = subprocess.Popen([*GENRE, *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_when is None:
        if process.wait() != exit_status:
            raise SystemExit(f"genre {' '.join(command)} failed")
        return time.perf_counter() - started
    target = None
    while target is None:
        target = kill_when()
        time.sleep(0.05)
    family = psutil.Process(process.pid).children(recursive=True)
    os.kill(target or process.pid, signal.SIGKILL)
    if target == 0:
        # Ray's agents outlive a SIGKILLed driver; clean them up as an operator would.
        process.wait()
        for leftover in psutil.wait_procs(family, timeout=5)[1]:
            leftover.kill()
    elif process.wait() != 0:
        raise SystemExit(f"genre {' '.join(command)} failed after its worker was killed")
    return time.perf_counter() - started


def pid_in(path: Path, then: int | None = None) -> Callable[[], int | None]:
    """Wait for a paused worker's pid file; return that pid, or `then` (0: the sweep itself)."""
    return lambda: (int(path.read_text()) if then is None else then) if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("work", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    audio, data = work / "audio", work / "data"
    run(["synth", str(audio), "--tracks-per-genre", "5", "--seconds", "6"])
    prepare = ["prepare", str(audio), str(data), "--n-mels", "64", "--segment-seconds", "1.5"]
    results: dict[str, dict[str, float]] = {}

    prepare_s = run([*prepare, "--tracks-per-shard", "1"])
    shutil.rmtree(data)

    def first_shard_written() -> int | None:
        return 0 if list(work.glob(".data.partial-*/*/*.parquet")) else None

    killed = run([*prepare, "--tracks-per-shard", "1"], kill_when=first_shard_written)
    rerun = run([*prepare, "--tracks-per-shard", "1"])
    results["prepare killed after its first shard, rerun"] = {
        "without_s": prepare_s, "killed_s": killed, "rerun_s": rerun, "with_s": killed + rerun
    }  # fmt: skip

    def sweep(out: str, models: str, *extra: str) -> list[str]:
        return ["sweep", str(data), str(work / out), "--models", models, "--epochs", str(args.epochs),
                "--pretrained", "no", "--max-concurrent", "1", *extra]  # fmt: skip

    baseline = run(sweep("base", "cnn3"))
    worker_pid = work / "worker.pid"
    pause = f"cnn3=pause@1:1:{worker_pid}"
    killed_worker = run(sweep("worker", "cnn3", "--inject-fault", pause), kill_when=pid_in(worker_pid))
    results["Train worker SIGKILLed in epoch 1"] = {"without_s": baseline, "with_s": killed_worker}
    # Exit status 1: every trial of that sweep failed.
    raised = run(sweep("raise", "cnn3", "--inject-fault", "cnn3=raise@1:1"), exit_status=1)
    results["exception in epoch 1 (error row)"] = {"without_s": baseline, "with_s": raised}

    two = run(sweep("two", "cnn3,cnn4"))
    sweep_pid = work / "sweep.pid"
    first = run(
        sweep("resume", "cnn3,cnn4", "--inject-fault", f"cnn4=pause@1:1:{sweep_pid}"),
        kill_when=pid_in(sweep_pid, then=0),
    )
    resumed = run(sweep("resume", "cnn3,cnn4", "--resume"))
    results["sweep SIGKILLed in its 2nd trial, then --resume"] = {
        "without_s": two, "killed_s": first, "resume_s": resumed, "with_s": first + resumed
    }  # fmt: skip

    for name, times in results.items():
        row = {key: round(value, 1) for key, value in times.items()}
        row["cost_s"] = round(times["with_s"] - times["without_s"], 1)
        print(json.dumps({"fault": name, **row}))


if __name__ == "__main__":
    main()
