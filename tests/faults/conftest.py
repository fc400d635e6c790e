"""Fixtures of the fault-injection harness (tests/faults/harness.py runs the jobs,
tests/faults/invariants.py checks what a crash and a rerun leave)."""
from __future__ import annotations

from pathlib import Path

import pytest
from harness import Prepared, ensure_class_archive, kill_and_rerun, run_here, run_p300, stop_server
from invariants import Invariants


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sampled: a kill point of the subset CI runs (the rest need --all-points)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """CI runs the sampled points; ``--all-points`` runs every point."""
    if config.getoption("--all-points"):
        return
    skip = pytest.mark.skip(reason="one of the full set of kill points: run with --all-points")
    for item in items:
        if "faults" in item.keywords and "kill" in item.fixturenames and "sampled" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def class_archive() -> None:
    """The driver JVM's class archive (`p300 jvm-cache`), built once if missing: every killed run
    starts a JVM, and with the archive each spends about a quarter less CPU."""
    ensure_class_archive()


@pytest.fixture(scope="session")
def prepared(class_archive, spark, tmp_path_factory: pytest.TempPathFactory):
    """Stage roots made once per session by uncrashed runs on the session's SparkSession."""
    prep = Prepared(tmp_path_factory.mktemp("fault-roots"))
    yield prep
    prep.close()


@pytest.fixture
def case_root(tmp_path: Path):
    """Where one case's copy lives; its endpoint server (if any) is stopped afterwards."""
    path = tmp_path / "root"
    yield path
    stop_server(path)


@pytest.fixture
def p300():
    """A `p300` run in a process of its own (``run_p300``), for tests that drive commands themselves."""
    return run_p300


@pytest.fixture
def p300_here():
    """A `p300` command run in this process (``run_here``): the runs no test kills."""
    return run_here


@pytest.fixture
def invariants(spark) -> Invariants:
    return Invariants(spark)


@pytest.fixture
def fault_case(prepared: Prepared, case_root: Path):
    """kill_and_rerun bound to this test's prepared roots and case root; returns (case, reference)."""
    def run(stage: str, argv: tuple[str, ...], kill: tuple, start: str | None = None) -> tuple[Path, Path]:
        kill_and_rerun(prepared, case_root, stage, argv, kill, start)
        return case_root, prepared.root(stage)
    return run
