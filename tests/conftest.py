"""Shared fixtures: one session-scoped local SparkSession with Delta (or the active one,
so the suite also runs on a cluster), a fresh storage root and MLflow store per test."""
from __future__ import annotations

from pathlib import Path

import pytest

from config_factory import make_config
from pipeline.config import Config
from pipeline.spark import get_spark


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
