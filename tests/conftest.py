"""One local Ray for the whole test run, and generated audio collections."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from data_pipeline.prepare import PrepareConfig, PrepareResult, prepare
from tests.audio_factory import make_collection


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    # Two CPUs, as on the smallest machine genre must run on; loopback and no dashboard.
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
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
