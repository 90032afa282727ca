"""Broken and hostile datasets and run folders (issue 28, items 4, 5 and 15).

Shard contents are checked against the manifest where they are read (a NaN, a wrong shape, a label
outside the genres: one line naming the shard), a dataset prepared again while a run reads it stops
the run in one line, and neither a manifest nor a results table can make genre open a file outside
the dataset or the run. Ray-free, on datasets written here with pyarrow, but for two one-epoch sweeps.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from data_pipeline.errors import UserInputError
from data_pipeline.features import FeatureConfig
from data_pipeline.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    DatasetChanged,
    manifest_hash,
    read_manifest,
    write_manifest,
)
from data_pipeline.shards import (
    MIXED_SHARDS,
    BrokenShard,
    check_shards,
    read_split,
    segments_table,
    shard_name,
    write_shard,
    written_shards,
)
from genre.cli import EXIT_USER_ERROR, main
from genre.config import TrainConfig
from genre.models import create_model
from genre.run_folder import RunFolder
from genre.sweep.driver import SweepConfig, run_sweep
from genre.sweep.record import SweepRecord, read_sweep_record, write_sweep_record
from genre.sweep.results import TABLE_COLUMNS
from genre.train.batches import StreamedSplit, read_windows, read_windows_by_shard
from genre.train.checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from tests.audio_factory import make_clip
from tests.conftest import sweep

FEATURES = FeatureConfig(n_mels=64, segment_seconds=1.5)  # 64 x 65, as the tests' tiny dataset
GENRES = ("blues", "jazz", "rock")
SPLITS = ("train", "val", "test")
CPU = torch.device("cpu")


def write_dataset(
    folder: Path, *, shape: tuple[int, int] | None = None, labels: list[int] | None = None, seed: int = 0
) -> Path:
    """A small dataset as `genre prepare` lays it out: per split two shards of 3 tracks x 2 windows.

    `shape` writes mels of another shape than the manifest's; `labels` gives the train shards' labels."""
    rng = np.random.default_rng(seed)
    mel_shape = shape or (FEATURES.n_mels, FEATURES.frames)
    counts = {}
    for split in SPLITS:
        rows = 0
        for index in range(2):
            tracks = [f"{GENRES[t]}/{split}{index}-{t}.wav" for t in range(3) for _ in range(2)]
            shard_labels = [t for t in range(3) for _ in range(2)]
            if split == "train" and labels is not None:
                shard_labels = labels[index * 6 : index * 6 + 6]
            mels = rng.uniform(-80, 0, size=(6, *mel_shape)).astype(np.float16)
            table = segments_table(
                tracks, [0, 1] * 3, shard_labels, [GENRES[t % 3] for t in shard_labels], [split] * 6, mels
            )
            write_shard(table, folder / split / shard_name(index))
            rows += 6
        counts[split] = {"tracks": 6, "segments": rows}
    manifest = {
        "format_version": FORMAT_VERSION,
        "features": FEATURES.to_dict(),
        "labels": {str(i): genre for i, genre in enumerate(GENRES)},
        "split": {"protocol": "track", "method": "stratified", "leaks_tracks_across_splits": False},
        "counts": counts,
        "shards": written_shards(folder, SPLITS),
        "shard_order": MIXED_SHARDS,
        "created": f"seed {seed}",  # two datasets written here differ in their manifests, as two prepares do
    }
    write_manifest(folder, manifest)
    return folder


def poison(shard: Path, value: float, row: int = 3) -> None:
    """Rewrite one shard with one value of one row's mel set to `value` (NaN, infinity)."""
    table = pq.read_table(shard)
    mels = table.column("mel").combine_chunks().to_numpy_ndarray().copy()
    mels[row, 5, 7] = value
    column = pa.FixedShapeTensorArray.from_numpy_ndarray(mels)
    pq.write_table(table.set_column(table.schema.get_field_index("mel"), "mel", column), shard)


def edit_manifest(data: Path, change) -> None:
    manifest = json.loads((data / MANIFEST_NAME).read_text())
    change(manifest)
    (data / MANIFEST_NAME).write_text(json.dumps(manifest))


def replace_dataset(data: Path, seed: int = 1) -> None:
    """What `prepare --overwrite` does to a folder: a new dataset, the same shard names, renamed in."""
    staging = write_dataset(data.parent / f".{data.name}.partial", seed=seed)
    retired = data.parent / f".{data.name}.replaced"
    os.replace(data, retired)
    os.replace(staging, data)
    shutil.rmtree(retired)


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == EXIT_USER_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def write_run(out: Path, checkpoint: str, model: torch.nn.Module | None = None) -> Path:
    """A run folder holding one completed trial of cnn3 whose checkpoint the table names `checkpoint`;
    with `model`, its checkpoint written there (a path relative to `out`, or absolute)."""
    out.mkdir(parents=True, exist_ok=True)
    row = {"model": "cnn3", "trial_id": "a", "status": "completed", "val_segment_accuracy": 0.5,
           "val_track_accuracy": 0.5, "checkpoint": checkpoint}  # fmt: skip
    pd.DataFrame([row]).reindex(columns=TABLE_COLUMNS).to_parquet(out / "results.parquet")
    if model is not None:
        save_checkpoint(out / checkpoint, model)
    return out


def save_checkpoint(path: Path, model: torch.nn.Module) -> Path:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": "cnn3",
        "config": {"amp": "off", "dropout": None},
        "features": FEATURES.to_dict(),
        "labels": {str(i): genre for i, genre in enumerate(GENRES)},
        "epoch": 0,
        "metrics": {},
        "state_dict": model.state_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def cnn3() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("cnn3", num_classes=len(GENRES))


# Item 4: broken shard contents.


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_mel_is_refused_by_every_reader_naming_its_shard(tmp_path, value):
    data = write_dataset(tmp_path / "data")
    shard = data / "train" / shard_name(1)
    poison(shard, value)
    check_shards(data, read_manifest(data))  # footers alone cannot tell: the values are read to know
    readers = {
        "held": lambda: read_windows(data, "train", CPU),
        "split": lambda: read_split(data, "train", columns=["mel", "label"]),
        "scored by shard": lambda: list(read_windows_by_shard(data, "train", CPU)),
        "streamed": lambda: list(StreamedSplit(data, "train", 0, 1).batches(0, 4, 8, CPU)),
    }
    for name, read in readers.items():
        with pytest.raises(BrokenShard) as refused:
            read()
        message = str(refused.value)
        assert "\n" not in message, name
        assert message.startswith(f"{shard} holds mel values that are not finite (NaN or infinity)"), name
    # The other splits and the columns without mels are read as before.
    assert read_split(data, "train", columns=["label"]).num_rows == 12
    assert len(read_windows(data, "val", CPU)) == 12


def test_mels_of_another_shape_than_the_manifests_are_refused_before_a_sweep_starts(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", shape=(32, 65))
    shard = data / "train" / shard_name(0)
    expected = f"{shard} holds 32x65 mels, not the 64x65 of the manifest's features"
    line = one_line_error(capsys, ["sweep", str(data), str(tmp_path / "run"), "--models", "cnn3"])
    assert line.startswith(f"genre sweep: error: {expected}")
    assert not (tmp_path / "run").exists()
    with pytest.raises(BrokenShard, match=f"^{re.escape(expected)}"):
        read_split(data, "train")


def test_labels_outside_the_genres_are_refused_from_the_footers_and_where_they_are_read(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", labels=[0, 1, 2, 0, 1, 2, 0, 1, 2, 7, 1, 2])
    shard = data / "train" / shard_name(1)
    expected = f"{shard} holds labels 0 to 7, outside the manifest's 3 genres (0 to 2)"
    line = one_line_error(capsys, ["sweep", str(data), str(tmp_path / "run"), "--models", "cnn3"])
    assert line.startswith(f"genre sweep: error: {expected}")
    # Written without statistics, the footer cannot tell: the read does.
    pq.write_table(pq.read_table(shard), shard, write_statistics=False)
    check_shards(data, read_manifest(data))
    held = lambda: read_windows(data, "train", CPU)  # noqa: E731
    streamed = lambda: list(StreamedSplit(data, "train", 0, 1).batches(0, 4, 8, CPU))  # noqa: E731
    for read in (held, streamed):
        with pytest.raises(BrokenShard, match=f"^{re.escape(expected)}"):
            read()


def test_predict_refuses_a_checkpoint_of_nan_weights_in_one_line(tmp_path, capsys):
    model = cnn3()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # what training on a NaN shard made of every weight
    run = write_run(tmp_path / "run", "checkpoints/cnn3-a/best.pt", model)
    clip = make_clip(tmp_path / "clip.wav", 3.0)
    line = one_line_error(capsys, ["predict", str(clip), "--run", str(run), "--device", "cpu"])
    assert "holds weights that are not finite numbers (NaN or infinity" in line
    assert "nan" not in line.replace("NaN", "")


def test_predict_gives_an_error_line_not_a_nan_probability_when_the_output_overflows(tmp_path, capsys):
    model = cnn3()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(3e38)  # finite weights whose products are not: the logits are infinite
    run = write_run(tmp_path / "run", "checkpoints/cnn3-a/best.pt", model)
    clip = make_clip(tmp_path / "clip.wav", 3.0)
    assert main(["predict", str(clip), "--run", str(run), "--device", "cpu", "--json"]) == 1
    captured = capsys.readouterr()
    (printed,) = [json.loads(line) for line in captured.out.splitlines()]
    assert printed["error"] == "the model's output for this file is not a finite number (NaN or infinity)"
    assert "nan" not in captured.out.lower().replace("(nan or", "")


# Item 5: DATA replaced while a run reads it.


def test_a_reader_given_the_starting_manifest_hash_refuses_a_dataset_prepared_again(tmp_path):
    data = write_dataset(tmp_path / "data")
    started = manifest_hash(data)
    streamed = StreamedSplit(data, "train", 0, 1, manifest_sha256=started)
    assert len(read_windows(data, "val", CPU, manifest_sha256=started)) == 12
    replace_dataset(data)  # the same shard names, other windows: nothing in the files tells them apart
    now = manifest_hash(data)
    expected = (
        f"DATA '{data}' changed while in use (its manifest's sha256 was {started[:12]} at the start, it is "
        f"{now[:12]} now: prepared again?); a run reads one dataset only"
    )
    readers = {
        "held (a restarted worker)": lambda: read_windows(data, "train", CPU, manifest_sha256=started),
        "streamed, the next epoch": lambda: list(streamed.batches(1, 4, 8, CPU)),
        "scored by shard": lambda: list(read_windows_by_shard(data, "train", CPU, started)),
        "a new streamed worker": lambda: StreamedSplit(data, "train", 0, 1, manifest_sha256=started),
    }  # fmt: skip
    for name, read in readers.items():
        with pytest.raises(DatasetChanged) as refused:
            read()
        assert str(refused.value).startswith(expected), name
        assert "\n" not in str(refused.value)
    # Without a hash (a reader outside a run), the new dataset is simply read.
    assert len(read_windows(data, "train", CPU)) == 12


def test_a_dataset_gone_while_in_use_is_said_to_have_changed(tmp_path):
    data = write_dataset(tmp_path / "data")
    started = manifest_hash(data)
    streamed = StreamedSplit(data, "train", 0, 1, manifest_sha256=started)
    shutil.rmtree(data)
    next_epoch = lambda: list(streamed.batches(1, 4, 8, CPU))  # noqa: E731
    held = lambda: read_windows(data, "val", CPU, manifest_sha256=started)  # noqa: E731
    for read in (next_epoch, held):
        with pytest.raises(
            DatasetChanged, match=r"changed while in use .*its manifest is gone: prepared again"
        ):
            read()


def test_evaluate_refuses_a_dataset_prepared_again_after_it_read_the_manifest(tmp_path, monkeypatch):
    from genre import evaluate as evaluation

    data = write_dataset(tmp_path / "data")
    checkpoint = save_checkpoint(tmp_path / "best.pt", cnn3())
    read_split_as_is = evaluation.read_split

    def replaced_first(*args, **kwargs):  # DATA prepared again between evaluate's checks and its read
        replace_dataset(data)
        return read_split_as_is(*args, **kwargs)

    monkeypatch.setattr(evaluation, "read_split", replaced_first)
    with pytest.raises(DatasetChanged, match="changed while in use"):
        evaluation.evaluate(data, checkpoint, tmp_path / "report")
    assert not (tmp_path / "report").exists()


# Item 15: paths out of DATA and out of the run.


@pytest.mark.parametrize(
    "listed", ["../outside.parquet", "/etc/passwd", "train/../../outside.parquet", "ABSOLUTE"]
)
def test_manifest_shard_paths_that_leave_data_are_refused_by_sweep_and_evaluate(tmp_path, capsys, listed):
    data = write_dataset(tmp_path / "data")
    outside = tmp_path / "outside.parquet"
    shutil.copy(data / "test" / shard_name(0), outside)  # a readable shard: only its place is wrong
    listed = str(outside) if listed == "ABSOLUTE" else listed
    edit_manifest(data, lambda manifest: manifest["shards"]["test"][0].update(path=listed))
    expected = f"{data / MANIFEST_NAME} lists a shard outside the dataset ({listed!r})"
    line = one_line_error(capsys, ["sweep", str(data), str(tmp_path / "run"), "--models", "cnn3"])
    assert line.startswith(f"genre sweep: error: {expected}")
    run = write_run(tmp_path / "trained", "checkpoints/cnn3-a/best.pt", cnn3())
    line = one_line_error(capsys, ["evaluate", str(data), "--run", str(run), "--device", "cpu"])
    assert line.startswith(f"genre evaluate: error: {expected}")
    with pytest.raises(UserInputError, match="lists a shard outside the dataset"):
        read_split(data, "test")


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_a_results_checkpoint_outside_the_run_is_refused_by_predict_and_evaluate(tmp_path, capsys, where):
    elsewhere = save_checkpoint(tmp_path / "elsewhere" / "best.pt", cnn3())  # a loadable checkpoint
    stored = str(elsewhere) if where == "absolute" else "../elsewhere/best.pt"
    run = write_run(tmp_path / "run", stored)
    clip = make_clip(tmp_path / "clip.wav", 3.0)
    expected = f"the results in {str(run)!r} name a checkpoint outside the run folder and its run storage"
    line = one_line_error(capsys, ["predict", str(clip), "--run", str(run), "--device", "cpu"])
    assert line.startswith(f"genre predict: error: {expected}")
    data = write_dataset(tmp_path / "data")
    line = one_line_error(capsys, ["evaluate", str(data), "--run", str(run), "--device", "cpu"])
    assert line.startswith(f"genre evaluate: error: {expected}")


def test_a_checkpoint_in_the_run_or_its_storage_is_loaded(tmp_path, capsys):
    run = write_run(tmp_path / "run", "checkpoints/cnn3-a/best.pt", cnn3())
    clip = make_clip(tmp_path / "clip.wav", 3.0)
    assert main(["predict", str(clip), "--run", str(run), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{clip}: ")
    # --storage elsewhere: sweep.yaml names it, and its checkpoints are the run's.
    storage = tmp_path / "shared-runs"
    checkpoint = save_checkpoint(storage / "checkpoints" / "cnn3-a" / "best.pt", cnn3())
    write_run(tmp_path / "run", str(checkpoint))
    write_sweep_record(run, SweepRecord(str(storage), str(tmp_path / "data"), "", {}))
    assert RunFolder(run).best_checkpoint() == str(checkpoint)


def test_a_uri_checkpoint_must_be_in_the_run_storage_its_bucket_and_its_endpoint(tmp_path):
    storage = "s3://runs/sweeps/one?endpoint_override=127.0.0.1%3A9000&scheme=http"
    run = tmp_path / "run"
    write_run(run, "")
    write_sweep_record(run, SweepRecord(storage, "s3://data/set", "", {}))
    folder = RunFolder(run)
    good = "s3://runs/sweeps/one/checkpoints/cnn3-a/best.pt?endpoint_override=127.0.0.1%3A9000&scheme=http"
    assert folder.locate(good) == good
    for bad in (
        "s3://runs/sweeps/other/checkpoints/cnn3-a/best.pt?endpoint_override=127.0.0.1%3A9000&scheme=http",
        "s3://elsewhere/sweeps/one/best.pt?endpoint_override=127.0.0.1%3A9000&scheme=http",
        "s3://runs/sweeps/one/best.pt?endpoint_override=attacker.example%3A9000&scheme=http",
        "s3://runs/sweeps/one/../other/best.pt?endpoint_override=127.0.0.1%3A9000&scheme=http",
        "gs://runs/sweeps/one/best.pt",
        "/etc/passwd",
    ):
        with pytest.raises(UserInputError, match="outside the run folder and its run storage"):
            folder.locate(bad)


# One-epoch sweeps of one model on copies of the tests' tiny dataset: each trial stops at its first read.


def test_a_sweep_of_a_nan_shard_never_yields_a_completed_row(tiny_dataset, tmp_path):
    data = shutil.copytree(tiny_dataset, tmp_path / "data")
    shard = data / read_manifest(data)["shards"]["train"][0]["path"]
    poison(shard, float("nan"), row=0)
    table = sweep(data, tmp_path / "run", ("cnn3",), max_failures=0)
    (row,) = table.to_dict("records")
    assert row["status"] == "error"
    assert row["error"].startswith(
        f"BrokenShard: {shard} holds mel values that are not finite (NaN or infinity)"
    )
    assert "\n" not in row["error"]


def test_a_sweep_whose_data_is_prepared_again_as_it_starts_stops_its_trial_and_keeps_the_first_hash(
    tiny_dataset, tmp_path
):
    data = shutil.copytree(tiny_dataset, tmp_path / "data")
    started = manifest_hash(data)

    def prepare_again(line: str) -> None:
        # After the sweep has read DATA and recorded it, before any trial reads it: `prepare --overwrite`.
        if line.startswith("train split:"):
            staging = shutil.copytree(tiny_dataset, tmp_path / ".data.partial")
            edit_manifest(staging, lambda manifest: manifest.update(created="prepared again"))
            os.replace(data, tmp_path / ".data.replaced")
            os.replace(staging, data)

    train = TrainConfig(epochs=1, pretrained="no", seed=5)
    config = SweepConfig(data=data, out=tmp_path / "run", models=("cnn3",), train=train, max_failures=0)
    table = run_sweep(config, progress=prepare_again).table
    assert manifest_hash(data) != started  # DATA was replaced during the sweep
    (row,) = table.to_dict("records")
    assert row["status"] == "error"
    assert row["error"].startswith(f"DatasetChanged: DATA '{data}' changed while in use")
    # The table names the dataset the sweep started with, as sweep.yaml does.
    assert row["dataset_manifest_sha256"] == started
    assert read_sweep_record(tmp_path / "run").manifest_sha256 == started
    assert f"manifest sha256 `{started[:12]}`" in (tmp_path / "run" / "results.md").read_text()
