"""Shared fixtures: one session-scoped local SparkSession with Delta (or the active one,
so the suite also runs on a cluster), a fresh storage root and MLflow store per test."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Config, load_config
from pipeline.spark import get_spark


def make_config(root: Path, **overrides: str) -> Config:
    """A test configuration on a temporary root (the environment is ignored on purpose)."""
    # small raw_eeg chunks, so that test recordings (seconds to a minute) span several rows,
    # and C1-only JIT whatever the cores, so the suite's JVM is the same everywhere
    sets = {"spark.master": "local[2]", "spark.shuffle_partitions": "2", "storage.raw_chunk_samples": "2048",
            "spark.jit": "c1", **overrides}
    return load_config(root=str(root), env={}, overrides=sets)


@pytest.fixture(scope="session")
def spark():
    session = get_spark(make_config(Path("/tmp/p300-unused")), for_tests=True)
    yield session
    # the session is shared by the whole run; stopping it here would break a reused cluster session


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "lakehouse"
    path.mkdir()
    return path


@pytest.fixture
def cfg(root: Path) -> Config:
    """Config on a temporary root; its MLflow store is sqlite under that root."""
    return make_config(root)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all-points", action="store_true", default=False,
                     help="fault tests (-m faults): every kill point of every job, not only CI's sample")
