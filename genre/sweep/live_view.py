"""A live view of the sweep: one line per trial event, with the running tally."""

from __future__ import annotations

import time

from ray.tune import Callback

from genre import reports
from genre.reports import is_final, metric_column

# What a line shows of an epoch's report and of a trial's final one.
VAL_ACCURACY = metric_column("val", "segment", "accuracy")
TEST_ACCURACY = {level: metric_column("test", level, "accuracy") for level in ("segment", "track")}
# A trial that has reported no epoch this long is said to be waiting, and again as long again after.
WAITING_NOTICE_S = 180.0


class LiveView(Callback):
    """Prints trial starts, each epoch's validation accuracy, completions and errors, and trials
    that have reported nothing for long (their workers wait for a node that can hold them)."""

    def __init__(self, epochs: dict[str, int]) -> None:
        """`epochs`: each model's trials' budget (per_model may give a model its own)."""
        # No printer held here: Tune pickles its callbacks with the experiment state.
        self.epochs = epochs
        self.started = time.perf_counter()
        self.silent_since: dict[str, float] = {}

    def __setstate__(self, state: dict) -> None:
        # Restored by --resume in another process: its clock starts now (perf_counter's origin differs).
        self.__dict__.update(state)
        self.started = time.perf_counter()
        self.silent_since = {}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.silent_since[trial.trial_id] = time.perf_counter()
        self._line(trials, f"{_name(trial)} started")

    def on_step_end(self, iteration, trials, **info) -> None:
        now = time.perf_counter()
        for trial in trials:
            since = self.silent_since.get(trial.trial_id)
            if since is not None and trial.status == "RUNNING" and now - since >= WAITING_NOTICE_S:
                minutes = (now - since) / 60
                self._line(trials, f"{_name(trial)} has reported nothing for {minutes:.0f} min: its workers "
                           "wait for a node that can hold them, or its first epoch is long")  # fmt: skip
                self.silent_since[trial.trial_id] = now

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.silent_since.pop(trial.trial_id, None)
        if is_final(result):
            segment = result.get(TEST_ACCURACY["segment"], float("nan"))
            track = result.get(TEST_ACCURACY["track"], float("nan"))
            text = f"{_name(trial)} finished: test accuracy {segment:.3f} (segment), {track:.3f} (track)"
            if reports.STOPPED_EARLY in result:
                text += f"; stopped early by --patience after epoch {result[reports.STOPPED_EARLY] + 1}"
        else:
            epochs = self.epochs.get(trial.config.get("model"), "?")
            text = (
                f"{_name(trial)} epoch {result.get(reports.EPOCH, 0) + 1}/{epochs}: "
                f"loss {result.get(reports.TRAIN_LOSS, float('nan')):.3f}, "
                f"val accuracy {result.get(VAL_ACCURACY, float('nan')):.3f}"
            )
        self._line(trials, text)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._line(trials, f"{_name(trial)} FAILED (see the results table for the error)")

    def _line(self, trials, text: str) -> None:
        counts: dict[str, int] = {}
        for trial in trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        tally = ", ".join(f"{status.lower()} {n}" for status, n in sorted(counts.items()))
        print(f"[{time.perf_counter() - self.started:7.1f}s] {text}  ({tally})", flush=True)


def _name(trial) -> str:
    return f"{trial.config.get('model', '?')} ({trial.trial_id})"
