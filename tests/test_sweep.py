"""`genre sweep` for real on tiny shards: concurrent trials, the table, checkpoints, ASHA.

Data-parallel trials: tests/test_storage.py (with run storage in S3).
"""

import itertools
import json
import math
import time

import pandas as pd
import pytest
import ray
import torch

from data_pipeline.errors import UserInputError
from data_pipeline.shards import read_mels, read_split
from genre.config import TrainConfig
from genre.reports import metric_columns
from genre.sweep.driver import SweepConfig, run_sweep
from genre.train.checkpoints import load_checkpoint, model_from_checkpoint
from genre.train.forward import segment_probabilities
from genre.train.metrics import split_metrics
from tests.conftest import SIX, quiet, sweep
from tests.ray_nodes import LOOPBACK


def test_all_six_models_get_a_row_with_every_metric(six_model_run):
    _, table = six_model_run
    assert list(table["model"]) == list(SIX)
    assert (table["status"] == "completed").all()
    for column in metric_columns():
        assert table[column].between(0, 1).all(), column
    assert (table["params"] > 0).all() and (table["train_time_s"] > 0).all()
    assert (table["split_protocol"] == "track (stratified)").all()


def test_trials_listen_on_loopback_only(six_model_sweep):
    # The tests' Ray is on loopback, as the one genre starts; a single-worker trial must not open a
    # process group, whose store would listen on every interface.
    assert len(six_model_sweep.listening) >= 4, six_model_sweep.listening
    assert {ip for ip, _ in six_model_sweep.listening} <= LOOPBACK, six_model_sweep.listening


def test_trials_really_run_at_the_same_time(six_model_run):
    _, table = six_model_run
    windows = sorted(zip(table["started_at"], table["finished_at"], strict=True))
    overlapping = sum(1 for a, b in itertools.pairwise(windows) if b[0] < a[1])
    assert overlapping >= 1


def test_the_run_writes_the_table_history_plots_and_checkpoints(six_model_run):
    out, table = six_model_run
    assert pd.read_parquet(out / "results.parquet").shape == table.shape
    assert pd.read_csv(out / "results.csv").shape[0] == 6
    markdown = (out / "results.md").read_text()
    assert "split protocol: **track (stratified)**" in markdown and "| vgg11 |" in markdown
    history = pd.read_parquet(out / "history.parquet")
    assert sorted(history["model"]) == sorted(SIX) and (history["epoch"] == 0).all()
    # One per trial, all trials' validation accuracy, and the summary with its intervals.
    assert len(list((out / "plots").glob("*.png"))) == 8
    assert "single run" in markdown  # one run per model: the summary says no interval can be given
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["model"]) == set(SIX) and set(summary["n"]) == {1}
    assert len(list((out / "tune").rglob("events.out.tfevents*"))) == 6  # TensorBoard logs


def test_the_same_seed_gives_the_same_metrics_and_weights_whatever_trains_beside_it(
    six_model_run, tiny_dataset, tmp_path
):
    """cnn3 alone, with the six-model sweep's seed and options: the same row, history and best weights
    (on CPU; docs/sweep.md, "Reproducible results": what holds on a GPU)."""
    out, table = six_model_run
    alone = sweep(tiny_dataset, tmp_path, ("cnn3",))
    first, again = table.set_index("model").loc["cnn3"], alone.set_index("model").loc["cnn3"]
    for column in [*metric_columns(), "best_epoch", "params", "lr", "batch_size", "seed"]:
        assert first[column] == again[column], column
    history = [
        pd.read_parquet(folder / "history.parquet").query("model == 'cnn3'").reset_index(drop=True)
        for folder in (out, tmp_path)
    ]
    assert history[0]["train_loss"].tolist() == history[1]["train_loss"].tolist()
    weights = [
        load_checkpoint(folder / row["checkpoint"])["state_dict"]
        for folder, row in ((out, first), (tmp_path, again))
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_a_reloaded_best_checkpoint_reproduces_the_reported_test_metrics(six_model_run, tiny_dataset):
    out, table = six_model_run
    test = read_split(tiny_dataset, "test")
    for _, row in table.iterrows():
        payload = load_checkpoint(out / row["checkpoint"])
        assert payload["features"]["n_mels"] == 64 and payload["labels"]["0"] == "genre0"
        model = model_from_checkpoint(payload)
        probabilities = segment_probabilities(model, [read_mels(test)], torch.device("cpu"))
        labels = torch.tensor(test.column("label").to_pylist())
        scores = split_metrics("test", probabilities, labels, test.column("track_id").to_pylist())
        for name, value in scores.items():
            assert math.isclose(value, row[name], abs_tol=1e-6), (row["model"], name)


def test_sampled_configurations_under_asha_each_get_a_row(tiny_dataset, tmp_path):
    train = TrainConfig(epochs=2, pretrained="no", seed=5)
    config = SweepConfig(
        data=tiny_dataset, out=tmp_path, models=("cnn3",), train=train, num_samples=2, scheduler="asha"
    )
    table = run_sweep(config, progress=quiet).table
    assert len(table) == 2 and set(table["status"]) <= {"completed", "stopped"}
    assert table["trial_id"].is_unique
    assert table["lr"].nunique() == 2  # each trial its own sampled learning rate
    assert "cnn3 (" in (tmp_path / "results.md").read_text()
    # Stopped trials give their CPUs back, or the next sweep in this Ray would wait forever.
    deadline = time.monotonic() + 180
    while ray.available_resources().get("CPU", 0) < 2 - 1e-6 and time.monotonic() < deadline:
        time.sleep(1)
    assert ray.available_resources().get("CPU", 0) == pytest.approx(2)


def test_random_offsets_train_on_windows_drawn_between_the_grids_and_are_recorded(
    tiny_audio, tiny_dataset, tmp_path
):
    from data_pipeline.features import FeatureConfig
    from data_pipeline.prepare import PrepareConfig, prepare

    data = tmp_path / "hop"
    features = FeatureConfig(n_mels=64, segment_seconds=1.5)
    prepare(PrepareConfig(source=tiny_audio, out=data, features=features, train_hop=0.75), progress=quiet)
    train = TrainConfig(epochs=2, pretrained="no", seed=5, random_offsets=True)
    config = SweepConfig(data=data, out=tmp_path / "run", models=("cnn3",), train=train)
    table = run_sweep(config, quiet).table
    assert table.loc[0, "status"] == "completed", table.loc[0, "error"]
    recorded = json.loads(table.loc[0, "config"])
    assert recorded["random_offsets"] is True and recorded["train_offsets"] == 2
    # Without a dataset that keeps those windows, the option is refused before anything runs.
    with pytest.raises(UserInputError, match="prepare it with --train-hop"):
        run_sweep(SweepConfig(data=tiny_dataset, out=tmp_path / "no", models=("cnn3",), train=train), quiet)


def test_a_trial_hands_its_workers_one_frozen_setup_that_pickles_with_their_entry_point(tmp_path):
    import dataclasses
    import functools
    import pickle

    from data_pipeline.storage import open_storage
    from genre.config import ModelDefaults
    from genre.trial.trainable import TrialSetup, train_worker

    storage = open_storage(tmp_path / "storage")
    setup = TrialSetup(
        train={"cnn3": TrainConfig(batch_size=8)},
        data=open_storage(tmp_path / "data"),
        manifest_sha256="0" * 64,
        features={"n_mels": 64},
        labels={"0": "blues", "1": "jazz"},
        storage=storage,
        num_workers=1,
        cpus_per_worker=1.0,
        gpus_per_worker=0.0,
        max_failures=0,
        torch_threads=1,
        train_held=True,
        local_ray=True,
        defaults={"cnn3": ModelDefaults(lr=1e-4, dropout=0.5)},
        pretrained={"cnn3": "no"},
    )
    worker = setup.worker_setup({"model": "cnn3", "batch_size": 32}, "t1")
    assert worker.trial == setup.trial_config({"model": "cnn3", "batch_size": 32}, "t1")
    assert worker.trial.batch_size == 32  # sampled over --batch-size
    assert worker.folder == setup.run_storage.trial("cnn3", "t1") and worker.labels == setup.labels
    with pytest.raises(dataclasses.FrozenInstanceError):
        worker.train_held = False  # type: ignore[misc]
    # As genre_trial hands it to Ray Train: the entry point with its setup bound, no dict of settings.
    entry = pickle.loads(pickle.dumps(functools.partial(train_worker, worker)))
    assert entry.func is train_worker and entry.args == (worker,) and not entry.keywords
