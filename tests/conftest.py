"""One local Ray for the whole test run, and generated audio collections."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import ray

from data_pipeline.features import FeatureConfig
from data_pipeline.prepare import PrepareConfig, PrepareResult, prepare
from genre.config import TrainConfig
from genre.sweep.driver import SweepConfig, run_sweep
from tests.audio_factory import make_collection
from tests.ray_nodes import ListeningSampler

# Fixtures that start Ray (a local instance, or `ray start` nodes): a test using any of them, directly or
# through another fixture, is marked `ray`. `pytest -m "not ray"` runs the fast rest (about a minute).
RAY_FIXTURES = {"ray_session", "local_head", "token_head", "two_nodes_one_blind"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    # Two CPUs, as on the smallest machine genre must run on. With the dashboard, as `genre sweep`
    # starts Ray: Ray Train's placement-group cleaner needs its state API to free the resources of
    # trials that ASHA stops (without it they leak and later trials wait forever).
    # "local": never the cluster that Ray's address file of some earlier `ray start` names.
    ray.init(address="local", num_cpus=2, include_dashboard=True, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 genres x 5 tracks of 7 s: two 3 s segments per track, a 1 s tail dropped."""
    return make_collection(tmp_path_factory.mktemp("collection"))


@pytest.fixture(scope="session")
def prepared(ray_session: None, collection: Path, tmp_path_factory: pytest.TempPathFactory) -> PrepareResult:
    """The collection prepared once with default settings."""
    out = tmp_path_factory.mktemp("prepared") / "dataset"
    return prepare(PrepareConfig(source=collection, out=out, seed=3), progress=lambda _: None)


SIX = ("cnn3", "cnn4", "cnn4_gru", "efficientnet_b0", "efficientnet_b0_gru", "vgg11")


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="session")
def tiny_audio(tmp_path_factory) -> Path:
    """3 genres x 5 tracks x 4 s."""
    return make_collection(tmp_path_factory.mktemp("sweep-audio"), genres=3, tracks=5, seconds=4.0)


@pytest.fixture(scope="session")
def tiny_dataset(ray_session, tiny_audio, tmp_path_factory):
    """The tiny audio as 64-band 1.5 s segments (64 x 65): 18/6/6 segments, for quick sweeps."""
    source = tiny_audio
    out = tmp_path_factory.mktemp("sweep-data") / "dataset"
    features = FeatureConfig(n_mels=64, segment_seconds=1.5)
    prepare(PrepareConfig(source=source, out=out, features=features), progress=quiet)
    return out


def sweep(data, out, models, **train_options) -> pd.DataFrame:
    sweep_level = ("faults", "max_failures", "cv", "seeds")
    options = {k: train_options.pop(k) for k in list(train_options) if k in sweep_level}
    train = TrainConfig(**{"epochs": 1, "pretrained": "no", "seed": 5, **train_options})
    return run_sweep(
        SweepConfig(data=data, out=out, models=models, train=train, **options), progress=quiet
    ).table


@pytest.fixture(scope="session")
def six_model_sweep(tiny_dataset, tmp_path_factory) -> SimpleNamespace:
    """All six models as concurrent trials, and every address the test's Ray listened on meanwhile."""
    out = tmp_path_factory.mktemp("sweep-six")
    with ListeningSampler() as listening:
        table = sweep(tiny_dataset, out, SIX)
    return SimpleNamespace(out=out, table=table, listening=listening.seen)


@pytest.fixture(scope="session")
def six_model_run(six_model_sweep) -> tuple[Path, pd.DataFrame]:
    return six_model_sweep.out, six_model_sweep.table


FOLDS = 3


@pytest.fixture(scope="session")
def folded(ray_session, tiny_audio, tmp_path_factory) -> PrepareResult:
    """The tiny audio (3 genres x 5 tracks) prepared in 3 folds for cross-validation, 64 x 65 windows."""
    out = tmp_path_factory.mktemp("folded") / "dataset"
    features = FeatureConfig(n_mels=64, segment_seconds=1.5)
    return prepare(PrepareConfig(source=tiny_audio, out=out, features=features, folds=FOLDS), progress=quiet)


@pytest.fixture(scope="session")
def cv_file_run(folded, tmp_path_factory) -> SimpleNamespace:
    """`genre sweep --config FILE OUT --epochs 2` as a user runs it: a 3-fold cross-validation of cnn3
    from a YAML file (1 epoch there, 2 on the command line) that also logs to MLflow's file store; each
    trial streams its train folds (train-in-memory-mib 0)."""
    import os

    from genre.cli import main

    folder = tmp_path_factory.mktemp("cv-run")
    tracking = (folder / "mlruns").as_uri()
    config = folder / "sweep.yaml"
    config.write_text(
        f"data: {folded.out}\nmodels: [cnn3]\ncv: true\nepochs: 1\nbatch-size: 8\npretrained: no\n"
        f"seed: 5\nmlflow: {tracking}\ntrain-in-memory-mib: 0\n"
    )
    out = folder / "run"
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 keeps its file store behind this
    try:
        code = main(["sweep", "--config", str(config), str(out), "--epochs", "2"])
    finally:
        del os.environ["MLFLOW_ALLOW_FILE_STORE"]
    assert code == 0
    return SimpleNamespace(
        out=out, data=folded.out, tracking=tracking, table=pd.read_parquet(out / "results.parquet")
    )
