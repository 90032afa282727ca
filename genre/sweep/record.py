"""The sweep's record in OUT (`sweep.yaml`): its run storage, its dataset and the options it runs with.

The file is a `--config` file too (genre.sweep.options_file): `genre sweep --config OUT/sweep.yaml` starts
the same sweep elsewhere. `--resume` reads it, so a resumed sweep continues exactly the sweep that
was started, whatever the defaults of the command that resumes it; an option given again with another
value is refused by name, except those that only say how robustly or on what resources the trials run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from data_pipeline.errors import UserInputError
from data_pipeline.manifest import manifest_hash
from data_pipeline.storage import first_line, is_uri, open_storage, public_location, redact
from genre.run_folder import RunStorage
from genre.sweep import options_file as sweep_file
from genre.sweep.options import SweepConfig

SWEEP_FILE = "sweep.yaml"
# Applied to the trials that continue (each trial starts its Train workers with them) and recorded.
# Everything else would change what the trials compute, or (max_concurrent) is fixed in Tune's state.
CHANGEABLE_ON_RESUME = ("max_failures", "cpus_per_trial", "gpus_per_trial")
# The command-line flag of an option whose name is not its flag's.
_FLAGS = {"weights_dir": "--weights"}


@dataclass(frozen=True)
class SweepRecord:
    """What `sweep.yaml` holds."""

    storage: str
    data: str
    manifest_sha256: str
    # Options by name (SweepConfig.options()).
    options: dict[str, Any]
    # One entry per resume that changed an option: {"at": ISO time, "changed": {name: [old, new]}}.
    resumed: list[dict[str, Any]] = field(default_factory=list)


def read_sweep_record(out: Path) -> SweepRecord | None:
    """The record in OUT, None if there is none; a one-line error if it cannot be read."""
    path = Path(out) / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        values = sweep_file.load(path)
        for place in ("out", "address"):  # a --config file copied here: not part of the record
            values.pop(place, None)
        return SweepRecord(
            storage=values.pop("storage", None) or _out_storage(out),
            data=values.pop("data", ""),
            manifest_sha256=values.pop("manifest_sha256", ""),
            resumed=values.pop("resumed", None) or [],
            options=values,
        )
    except (OSError, UnicodeDecodeError, ValueError, TypeError, yaml.YAMLError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error).splitlines()[0]
        raise UserInputError(
            f"{path} cannot be read ({reason}); it records the sweep in OUT: "
            "restore it, or start a new sweep in another OUT"
        ) from None


def new_record(config: SweepConfig, out: Path) -> SweepRecord:
    """A new sweep's record; its run storage is --storage, else OUT, and holds no sweep yet."""
    storage = RunStorage(open_storage(config.storage or out))
    if storage.experiment.exists():
        where = "OUT" if storage.location == str(out) else f"the storage {storage.storage}"
        raise UserInputError(f"{where} already holds a sweep; pass --resume to continue it")
    data = open_storage(config.data)
    # Both named without credentials written into their URIs: DATA as given again on --resume is what
    # is opened, and the run storage is --storage given again, else opened with the machine's credentials.
    return SweepRecord(storage.location, data.location, manifest_hash(data), config.options())


def resumed_record(config: SweepConfig, out: Path, progress: Callable[[str], None]) -> SweepRecord:
    """The record of the sweep in OUT, after checking that `config` continues that very sweep."""
    from ray import tune

    from genre.trial.trainable import ray_filesystem

    record = read_sweep_record(out)
    if record is None:
        raise UserInputError(
            f"OUT {str(config.out)!r} holds no sweep to resume (no {SWEEP_FILE}); leave out --resume to "
            "start one"
        )
    storage = open_storage(config.storage or record.storage)
    if config.storage and storage.location != public_location(record.storage):
        raise UserInputError(
            f"--storage {storage} is not where the sweep in OUT keeps its run state "
            f"({redact(record.storage)}); leave --storage out to resume it"
        )
    if record.manifest_sha256 and manifest_hash(config.data) != record.manifest_sha256:
        raise UserInputError(
            f"DATA {str(config.data)!r} is not the dataset the sweep in OUT was started on "
            f"({record.data}, manifest sha256 {record.manifest_sha256[:12]}); resume it on that dataset"
        )
    options = config.options()
    # A record without an option that genre has now was written before it: its trials would resume
    # under the option's default, which need not be how they started.
    unrecorded = [flag(name) for name in options if name not in record.options]
    if unrecorded:
        raise UserInputError(
            f"the sweep in OUT {str(config.out)!r} was started by a genre without "
            f"{', '.join(unrecorded)}, so it cannot be resumed by this one; start it again in a new OUT"
        )
    changed = resume_changes(record.options, options)
    experiment = RunStorage(storage).experiment
    try:
        restorable = tune.Tuner.can_restore(experiment.path, storage_filesystem=ray_filesystem(storage))
    except OSError as error:  # credentials, the bucket, the network
        again = (
            "; if its URI carried credentials, give it again: --resume --storage URI"
            if not config.storage and is_uri(record.storage)
            else ""
        )
        raise UserInputError(
            f"cannot read the sweep's run state in {experiment}: {first_line(error)}{again}"
        ) from None
    if not restorable:
        raise UserInputError(
            f"the sweep in OUT {str(config.out)!r} never started a trial (no run state in {experiment}); "
            "run it again without --resume"
        )
    for name, (old, new) in changed.items():
        progress(f"resuming with {flag(name)} {_show(new)} (the sweep had {_show(old)})")
    return record_resume(record, options, changed)


def write_sweep_record(out: Path, record: SweepRecord) -> None:
    """OUT/sweep.yaml: DATA, the run storage unless it is OUT, the options, then genre's own record."""
    # Without credentials, however the record came by its locations (a --storage URI may hold them).
    storage = {} if record.storage == _out_storage(out) else {"storage": public_location(record.storage)}
    values = {
        "data": public_location(record.data),
        **storage,
        **record.options,
        "manifest_sha256": record.manifest_sha256,
        "resumed": record.resumed,
    }
    # Whole or not at all (a full disk leaves no empty sweep.yaml that --resume would read).
    open_storage(Path(out) / SWEEP_FILE).write_bytes(sweep_file.dump(values).encode("utf-8"))


def _out_storage(out: Path) -> str:
    return RunStorage(open_storage(Path(out))).location


def resume_changes(saved: dict[str, Any], wanted: dict[str, Any]) -> dict[str, list[Any]]:
    """The changeable options that `wanted` sets otherwise than `saved`: {name: [old, new]}.

    Any other difference is refused, named with its flag, before anything runs.
    """
    differences = {
        name: [saved.get(name), value]
        for name, value in wanted.items()
        if name in saved and _normal(saved[name]) != _normal(value)
    }
    refused = [name for name in differences if name not in CHANGEABLE_ON_RESUME]
    if refused:
        described = "; ".join(
            f"{flag(name)} {_show(differences[name][1])} (the sweep has {_show(differences[name][0])})"
            for name in refused
        )
        raise UserInputError(
            f"--resume continues the sweep in OUT as it was started: {described}; leave "
            f"{'it' if len(refused) == 1 else 'them'} out, or start a new sweep in another OUT "
            f"(only {', '.join(flag(n) for n in CHANGEABLE_ON_RESUME)} may change on --resume)"
        )
    return {name: change for name, change in differences.items() if name in CHANGEABLE_ON_RESUME}


def record_resume(record: SweepRecord, options: dict[str, Any], changed: dict[str, list[Any]]) -> SweepRecord:
    """The record after a resume that applied `changed`."""
    if not changed:
        return record
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "changed": changed}
    return replace(record, options=options, resumed=[*record.resumed, entry])


def flag(name: str) -> str:
    """The command-line flag of an option."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _normal(value: Any) -> Any:
    # JSON gives lists where the config holds tuples, and ints where it may hold floats.
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):  # a search space
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return "(default)" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
