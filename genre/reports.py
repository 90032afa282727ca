"""What a trial reports and the driver reads: the report keys and the metric column names.

A trial's workers report once per epoch (genre.train.fit), then once more as the trial ends
(genre.train.worker); Tune hands every report to the driver (the live view, ASHA, the results
table). Free of torch, torchmetrics and Ray: the driver and the trial's actor import it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

METRIC_NAMES = ("accuracy", "precision", "recall")
LEVELS = ("segment", "track")

# Every report: the epoch it follows (the last one in the final report) and the best so far.
EPOCH = "epoch"
BEST_EPOCH = "best_epoch"
# An epoch's report, besides its validation scores.
TRAIN_LOSS = "train_loss"
TRAIN_RUNNING_ACCURACY = "train_running_accuracy"
EPOCH_TIME_S = "epoch_time_s"
TRAIN_S = "train_s"
VALIDATE_S = "validate_s"
REPORT_S = "report_s"  # in the trial's own record of its epochs only (what reporting one cost)

# The final report: marked by FINAL, with the best epoch's scores on every split.
FINAL = "final"
PARAMS = "params"
AMP = "amp"  # the mixed precision the workers settled on
PRETRAINED = "pretrained"
CHECKPOINT = "checkpoint"  # the trial's best checkpoint, without credentials
TRAIN_TIME_S = "train_time_s"
SAMPLES_PER_S = "samples_per_s"
STARTED_AT = "started_at"
FINISHED_AT = "finished_at"
# Only where --patience ended the trial before its last epoch: the last epoch it trained.
STOPPED_EARLY = "stopped_early"

# Added on the way: by Ray Train's controller (genre.trial.report_relay), by Tune.
CHECKPOINT_PATH = "checkpoint_path"
TRIAL_ID = "trial_id"


def is_final(report: Mapping[str, Any]) -> bool:
    """Whether a report is a trial's last: the one sent as its training ended, not an epoch's."""
    return bool(report.get(FINAL))


def metric_column(split: str, level: str, metric: str) -> str:
    """One score's name: `val_segment_accuracy`, `test_track_recall`..."""
    return f"{split}_{level}_{metric}"


def metric_columns(splits: Sequence[str] = ("train", "val", "test")) -> list[str]:
    """The results table's metric columns, in order."""
    return [metric_column(s, level, m) for s in splits for level in LEVELS for m in METRIC_NAMES]
