"""Where a sweep's files are: OUT (results, history, plots, sweep.yaml) and the run storage (Tune's and
Train's run state, and one folder per trial with its best checkpoint). The one module that knows it.

OUT is a local folder; the run storage is OUT itself, or a shared path or s3:// / gs:// URI
(`--storage`). `genre predict` and `evaluate` find a run's best checkpoint here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from data_pipeline.errors import UserInputError
from data_pipeline.storage import Storage, is_uri, open_storage, public_location, redact
from genre.config import BEST_BY

if TYPE_CHECKING:
    import pandas as pd

# In the run storage: Tune's experiment, Ray Train's runs, and each trial's folder.
EXPERIMENT = "tune"
TRAIN_RUNS = "train"
CHECKPOINTS = "checkpoints"
BEST_NAME = "best.pt"


@dataclass(frozen=True)
class TrialFolder:
    """One trial's folder in the run storage: `best.pt`, its epochs, how often its loop started.

    Handed to the trial's workers whole: its filesystem holds the storage's credentials, if any."""

    storage: Storage

    @property
    def location(self) -> str:
        """Where the folder is, without credentials: what the trial's records name."""
        return self.storage.location

    @property
    def best_checkpoint(self) -> Storage:
        return self.storage.child(BEST_NAME)

    def attempts(self) -> int:
        """How many times the trial's training loop has started (1 + its restarts); 0 if never."""
        record = self.storage.child("attempts")
        return int(record.read_bytes()) if record.exists() else 0

    def count_attempt(self) -> None:
        """One more start: once per start of the loop (a restart after a failure, a resumed sweep)."""
        self.storage.child("attempts").write_bytes(b"%d" % (self.attempts() + 1))

    def write_history(self, history: list[dict[str, float]]) -> None:
        self.storage.child("history.json").write_bytes(json.dumps(history).encode())

    def read_history(self) -> list[dict[str, float]] | None:
        """The finished trial's own record of its epochs; None if it never finished."""
        record = self.storage.child("history.json")
        return json.loads(record.read_bytes()) if record.exists() else None


@dataclass(frozen=True)
class RunStorage:
    """Where a sweep keeps its run state and its trials' checkpoints."""

    storage: Storage

    @property
    def location(self) -> str:
        return self.storage.location

    @property
    def experiment(self) -> Storage:
        return self.storage.child(EXPERIMENT)

    @property
    def train_runs(self) -> Storage:
        return self.storage.child(TRAIN_RUNS)

    def trial(self, model: str, trial_id: str) -> TrialFolder:
        return TrialFolder(self.storage.child(CHECKPOINTS, f"{model}-{trial_id}"))

    def describe_trials(self) -> str:
        """How a user finds a trial's best checkpoint: as the table names it, without credentials."""
        return self.storage.child(CHECKPOINTS, "<model>-<trial>", BEST_NAME).location


@dataclass(frozen=True)
class RunFolder:
    """OUT: the sweep's record and everything written for the user."""

    out: Path

    @property
    def results(self) -> dict[str, Path]:
        """The results table in each format, and the per-epoch history."""
        return {
            "parquet": self.out / "results.parquet",
            "csv": self.out / "results.csv",
            "markdown": self.out / "results.md",
            "history": self.out / "history.parquet",
            # Per model, the test scores' mean and 95% interval over folds and seeds (genre.sweep.summary).
            "summary": self.out / "summary.csv",
        }

    @property
    def plots(self) -> Path:
        return self.out / "plots"

    def relative(self, location: str | None) -> str | None:
        """A location for the table: inside OUT as a path relative to it, so the folder can move or be
        copied; a URI without credentials."""
        if location and is_uri(location):
            return public_location(location)
        if not location or not Path(location).is_relative_to(self.out):
            return location
        return Path(location).relative_to(self.out).as_posix()

    def locate(self, stored: str) -> str:
        """Where a results row's checkpoint is: a relative one is inside OUT. Refused unless it is inside
        OUT or the run's storage: a results table is data, and must not make genre load any file."""
        location = stored if is_uri(stored) or Path(stored).is_absolute() else str(self.out / stored)
        if not _inside(location, str(self.out)) and not _inside(location, self._run_storage()):
            raise UserInputError(
                f"the results in {str(self.out)!r} name a checkpoint outside the run folder and its run "
                f"storage ({redact(stored)}); genre loads only a run's own checkpoints"
            )
        return location

    def _run_storage(self) -> str:
        """The run storage that OUT's sweep.yaml names (--storage), else OUT."""
        from genre.sweep.record import read_sweep_record  # here: that module imports this one

        record = read_sweep_record(self.out)
        return record.storage if record is not None else str(self.out)

    def table(self) -> pd.DataFrame:
        import pandas as pd  # here: trial processes import this module, and never read the table

        path = self.results["parquet"]
        if not path.is_file():
            raise UserInputError(
                f"{str(self.out)!r} holds no sweep results (results.parquet); run `genre sweep` first"
            )
        return pd.read_parquet(path)

    def best_checkpoint(self, model: str | None = None) -> str:
        """The checkpoint of the best completed trial by validation accuracy (of `model` if given).

        In a run of several trials per model (folds, seeds, samples), the model is chosen first, by
        its trials' mean validation accuracy, since one lucky fold says little; then that model's
        trial with the best validation accuracy.
        """
        table = self.table()
        table = table[table["status"] == "completed"]
        if model and model not in set(table["model"]):
            known = ", ".join(sorted(set(table["model"])))
            raise UserInputError(f"the run has no completed trial of {model!r}; it has {known}")
        if table.empty:
            raise UserInputError(f"the run in {str(self.out)!r} has no completed trial")
        if model is None:
            means = table.groupby("model")[[BEST_BY, "val_track_accuracy"]].mean()
            model = means.sort_values([BEST_BY, "val_track_accuracy"], ascending=False).index[0]
        table = table[table["model"] == model]
        best = table.sort_values([BEST_BY, "val_track_accuracy"], ascending=False).iloc[0]
        return self.locate(str(best["checkpoint"]))


def _inside(location: str, folder: str) -> bool:
    """Whether `location` is below `folder`: two paths (links followed), or two URIs of one store, bucket
    and options (without `..`: an object store may take it literally, pyarrow may not)."""
    if is_uri(location) != is_uri(folder):
        return False
    if not is_uri(location):
        return Path(location).resolve().is_relative_to(Path(folder).resolve())
    inner, outer = urlsplit(public_location(location)), urlsplit(public_location(folder))
    if ".." in PurePosixPath(inner.path).parts:
        return False
    same_store = (inner.scheme, inner.netloc, sorted(parse_qsl(inner.query))) == (
        outer.scheme,
        outer.netloc,
        sorted(parse_qsl(outer.query)),
    )
    return same_store and PurePosixPath(inner.path).is_relative_to(PurePosixPath(outer.path or "/"))


def checkpoint_folder_name(checkpoint: str) -> str:
    """`<model>-<trial>`: the name of the trial folder a checkpoint is in, for a path or a URI."""
    return PurePosixPath(open_storage(checkpoint).path).parent.name
