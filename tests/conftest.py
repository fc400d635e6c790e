"""Shared fixtures: one session-scoped local SparkSession with Delta (or the active one,
so the suite also runs on a cluster), a fresh storage root and MLflow store per test.

Test tiers: a test is marked by what it needs (pytest.ini lists the markers). Markers
follow from the fixtures a test uses (``FIXTURE_MARKERS``), or are set by its module; a
cluster, connect or faults test starts Spark too, so it is also marked spark. A test
without spark cannot start a JVM: its JAVA_HOME and PATH point at a ``java`` that fails
with a message naming the missing marker. So ``pytest -m "not spark"`` runs everything
without a JVM (the pure tests and the local servers'), ``pytest -m "not spark and not
server"`` the pure tier, and ``and not slow`` its quick part.
"""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

# One BLAS thread per process unless the caller chose otherwise: the tests' matrices are small,
# and OpenBLAS threads spinning on a busy 2-core machine made the classifier tests twice as slow.
# Set before numpy loads (below); test subprocesses and Spark's Python workers inherit it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest

from config_factory import make_config
from mlflow_template import make_template, seed_store
from pipeline.config import Config
from pipeline.spark import get_spark

# fixture (used directly or through another fixture) -> marker of the tests that use it
FIXTURE_MARKERS = {"spark": "spark", "mlflow_server": "server"}
# tests that may start a JVM (in this process or a child); each of them is also marked spark
JVM_MARKERS = ("spark", "cluster", "connect", "faults")


@pytest.fixture(scope="session")
def spark():
    session = get_spark(make_config(Path("/tmp/p300-unused")), for_tests=True)
    yield session
    # the session is shared by the whole run; stopping it here would break a reused cluster session


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated empty MLflow store, made once (tests/mlflow_template.py)."""
    return make_template(tmp_path_factory.mktemp("mlflow-template"))


@pytest.fixture
def root(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh storage root. Where the session has imported MLflow already (a test module uses
    it), the root's MLflow store starts as a copy of the migrated template, not migrated anew."""
    path = tmp_path / "lakehouse"
    path.mkdir()
    if "mlflow" in sys.modules:
        seed_store(request.getfixturevalue("mlflow_template"), path / "mlflow" / "mlflow.db")
    return path


@pytest.fixture
def cfg(root: Path) -> Config:
    """Config on a temporary root; its MLflow store is sqlite under that root."""
    return make_config(root)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all-points", action="store_true", default=False,
                     help="fault tests (-m faults): every kill point of every job, not only CI's sample")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in used and item.get_closest_marker(marker) is None:
                item.add_marker(marker)
        if any(item.get_closest_marker(m) for m in JVM_MARKERS) and item.get_closest_marker("spark") is None:
            item.add_marker("spark")  # -m "not spark" leaves out every test that starts a JVM


@pytest.fixture(scope="session")
def no_java_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JAVA_HOME whose bin/java refuses to start, naming the marker the test lacks."""
    home = tmp_path_factory.mktemp("no-jvm")
    java = home / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\necho 'this test starts a JVM: mark it spark (or cluster, connect, faults);"
                    " see tests/conftest.py' >&2\nexit 1\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return home


@pytest.fixture(autouse=True)
def _no_jvm_without_a_marker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if any(request.node.get_closest_marker(m) for m in JVM_MARKERS):
        return
    home = request.getfixturevalue("no_java_home")
    monkeypatch.setenv("JAVA_HOME", str(home))
    monkeypatch.setenv("PATH", f"{home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
