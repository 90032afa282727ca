"""`genre sweep` run as a user runs it, each line of its output time-stamped: for the benchmarks."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TimedSweep:
    """What a sweep printed and when (seconds from the command's start), and how it ended."""

    lines: list[tuple[float, str]]
    wall_s: float
    exit_code: int
    started_at: float  # the command's start, as time.time()

    def first(self, prefix: str = "", contains: str = "") -> float | None:
        """When the first line starting with `prefix` and holding `contains` was printed."""
        times = self.all(prefix, contains)
        return times[0] if times else None

    def all(self, prefix: str = "", contains: str = "") -> list[float]:
        return [t for t, line in self.lines if line.startswith(prefix) and contains in line]

    def phases(self) -> dict[str, float]:
        """The plan, the trials' starts, the first epoch, the last trial's end, the table, the exit."""
        found = {
            "to_plan_s": self.first("sweep: "),
            "first_trial_start_s": self.first(contains=") started"),
            "last_trial_start_s": (self.all(contains=") started") or [None])[-1],
            "first_epoch_1_s": self.first(contains=" epoch 1/"),
            "last_trial_finished_s": (self.all(contains=") finished") or [None])[-1],
            "table_printed_s": self.first("model "),
            "exit_s": self.wall_s,
        }
        return {key: round(value, 2) for key, value in found.items() if value is not None}


def timed_sweep(options: list[str], log: Path | None = None) -> TimedSweep:
    """Run `genre sweep OPTIONS` in a new process (this interpreter), its output time-stamped."""
    command = [sys.executable, "-m", "genre", "sweep", *options]
    lines: list[tuple[float, str]] = []
    written = log.open("w") if log else None
    started_at, started = time.time(), time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        stamp = time.perf_counter() - started
        lines.append((stamp, line.rstrip()))
        if written:
            written.write(f"{stamp:8.2f} {line}")
            written.flush()
    process.wait()
    wall = time.perf_counter() - started
    if written:
        written.close()
    return TimedSweep(lines, wall, process.returncode, started_at)
