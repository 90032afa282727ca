"""`genre sweep --storage`: run state and checkpoints on a path or an S3 bucket (a real S3 endpoint)."""

from __future__ import annotations

from urllib.parse import urlencode

import pandas as pd
import pyarrow.fs as pafs
import pytest

from data_pipeline.errors import UserInputError
from data_pipeline.storage import open_storage
from genre.cli import main
from genre.config import TrainConfig
from genre.evaluate import evaluate
from genre.run_folder import RunFolder
from genre.sweep.driver import SweepConfig, run_sweep
from genre.train.checkpoints import load_checkpoint
from tests.conftest import quiet
from tests.s3_server import CREDENTIALS, bucket, s3_endpoint_fixture  # noqa: F401 (s3_endpoint)


def test_a_path_is_made_absolute_and_a_uri_keeps_its_options_below_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = open_storage("runs/a")
    assert local.is_local and local.location == str(tmp_path / "runs" / "a")
    remote = open_storage("s3://bucket/runs?region=eu-west-1&scheme=http")
    child = remote.child("checkpoints", "cnn3-x", "best.pt")
    assert not remote.is_local
    assert child.location == "s3://bucket/runs/checkpoints/cnn3-x/best.pt?region=eu-west-1&scheme=http"
    assert child.path == "bucket/runs/checkpoints/cnn3-x/best.pt"


def test_an_unknown_scheme_is_a_clear_error():
    with pytest.raises(UserInputError, match="cannot open storage 'nosuchfs://x/y': Unrecognized filesystem"):
        open_storage("nosuchfs://x/y")


def test_a_local_write_replaces_the_file_whole_and_leaves_no_partial_file(tmp_path):
    target = open_storage(tmp_path / "deep" / "best.pt")
    target.write_bytes(b"old")
    target.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["best.pt"]


def test_a_sweep_with_s3_storage_keeps_run_state_and_checkpoints_in_the_bucket(
    s3_endpoint, tiny_dataset, tmp_path, capsys, monkeypatch
):
    """Its trial trains data-parallel on two workers: rank 0 alone writes checkpoints to the bucket.
    The train split streams, each worker its share of the shard files, the two shares of one size (else
    DDP's two workers would wait for each other's gradients forever)."""
    query = bucket(s3_endpoint, "genre-runs")
    storage = f"s3://{CREDENTIALS}genre-runs/sweeps/one?{query}"
    out = tmp_path / "run"
    train = TrainConfig(epochs=2, pretrained="no", seed=5, train_in_memory_mib=0)
    config = SweepConfig(
        data=tiny_dataset, out=out, models=("cnn3",), train=train, storage=storage, num_workers=2
    )
    result = run_sweep(config, progress=quiet)
    table = result.table

    assert table.loc[0, "status"] == "completed", table.loc[0, "error"]
    assert result.plan.num_workers == 2
    checkpoint = table.loc[0, "checkpoint"]
    # Recorded without the URI's credentials: it is read back with the machine's own.
    assert checkpoint.startswith("s3://genre-runs/sweeps/one/checkpoints/cnn3-")
    assert checkpoint.endswith(f"/best.pt?{query}")
    key, secret = CREDENTIALS.rstrip("@").split(":")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    filesystem, _ = pafs.FileSystem.from_uri(storage)
    listing = filesystem.get_file_info(pafs.FileSelector("genre-runs/sweeps/one", recursive=True))
    stored = {info.path for info in listing}
    assert any(p.startswith("genre-runs/sweeps/one/tune/") for p in stored)  # Tune's experiment state
    assert any(p.startswith("genre-runs/sweeps/one/train/") for p in stored)  # Train's epoch checkpoints
    assert not (out / "tune").exists() and not (out / "checkpoints").exists()
    # The table and plots stay with the driver; the model is read back from the bucket.
    assert (out / "results.parquet").is_file()
    assert load_checkpoint(checkpoint)["model"] == "cnn3"
    assert RunFolder(out).best_checkpoint() == checkpoint
    # Scores come from rank 0 over the whole split, so they match the checkpoint scored alone.
    scores = evaluate(tiny_dataset, checkpoint, tmp_path / "evaluation").scores
    assert scores["test_segment_accuracy"] == pytest.approx(table.loc[0, "test_segment_accuracy"], abs=1e-6)
    assert pd.read_parquet(out / "results.parquet").loc[0, "checkpoint"] == checkpoint

    # A second sweep into the same storage is refused, as for OUT.
    with pytest.raises(UserInputError, match="already holds a sweep; pass --resume"):
        run_sweep(SweepConfig(data=tiny_dataset, out=tmp_path / "other", models=("cnn3",), train=train,
                              storage=storage), progress=quiet)  # fmt: skip


def test_a_bucket_that_does_not_exist_stops_the_sweep_before_any_trial(
    s3_endpoint, tiny_dataset, tmp_path, capsys
):
    storage = f"s3://{CREDENTIALS}no-such-bucket/runs?{urlencode(s3_endpoint)}"
    code = main(["sweep", str(tiny_dataset), str(tmp_path / "run"), "--models", "cnn3", "--epochs", "1",
                 "--storage", storage])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    # The secret key written into the URI is not repeated in messages.
    assert error.startswith("genre sweep: error: cannot write to the run storage s3://genre-key:***@no-such")
    assert "Bucket 'no-such-bucket' not found" in error
    assert not (tmp_path / "run" / "results.parquet").exists()
