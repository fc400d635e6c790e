"""The fault-injection harness: jobs run as the installed `p300` console script in their own
process group, killed with SIGKILL at a named kill point (``P300__FAULTS__KILL_AT``, see
pipeline/faults.py) or after a share of the job's measured run time, then run again.

Each stage's root is prepared once per session by real runs that were never killed
(``prepared``) and copied for every case, so a case costs one killed run and one rerun; the
prepared roots double as the reference a crashed-then-rerun root must equal.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

P300 = Path(sys.executable).with_name("p300")
SETS = ("spark.master=local[2]", "spark.shuffle_partitions=2", "storage.raw_chunk_samples=2048", "spark.jit=c1",
        "training.cv_folds=2", "spark.driver_memory=1g")
SUBJECTS, MINUTES, CHANNELS, SFREQ = 4, 1.5, 8, 128.0
# stage -> (the stage it starts from, the p300 command that makes it)
STAGES = {
    "landing": (None, ("synth", "--subjects", str(SUBJECTS), "--minutes", str(MINUTES), "--channels",
                       str(CHANNELS), "--sfreq", str(SFREQ))),
    "ingested": ("landing", ("ingest",)),
    "preprocessed": ("ingested", ("preprocess",)),
    "trained": ("preprocessed", ("train",)),
    "deployed": ("trained", ("deploy",)),
    "evaluated": ("deployed", ("evaluate", "--target", "challenger")),
    "promoted": ("evaluated", ("promote",)),
    "scored": ("promoted", ("score",)),
}


@dataclass
class Run:
    code: int | None  # None: killed by the harness's timer
    out: str
    err: str
    seconds: float

    @property
    def killed(self) -> bool:
        return self.code is None or self.code == -signal.SIGKILL


def _env(kill_at: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P300", "MLFLOW_", "PYSPARK_GATEWAY"))}
    if kill_at:
        env["P300__FAULTS__KILL_AT"] = kill_at
    return env


def run_p300(root: Path, *argv: str, kill_at: str | None = None, kill_after_s: float | None = None,
             timeout_s: float = 900) -> Run:
    """One `p300` run in a new session (process group); SIGKILL to the whole group after
    ``kill_after_s``, as a power cut would hit the driver, its JVM and Python workers at once."""
    cmd = [str(P300), "--root", str(root), *[a for s in SETS for a in ("--set", s)], *argv]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=_env(kill_at), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=kill_after_s if kill_after_s is not None else timeout_s)
        return Run(proc.returncode, out, err, time.monotonic() - t0)
    except subprocess.TimeoutExpired:
        if kill_after_s is None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return Run(None, out, err, time.monotonic() - t0)


def stop_server(root: Path) -> None:
    """Stop a root's local endpoint server, if deploy started one (it runs in its own session)."""
    if (root / "serving").exists():
        subprocess.run([str(P300), "--root", str(root), "-q", "endpoint", "stop"], env=_env(None),
                       capture_output=True, timeout=120)


def copy_root(src: Path, dst: Path) -> Path:
    """A prepared root, copied; the sqlite store and artifact URIs hold absolute paths, so the
    MLflow store is rewritten to the copy's location (MLflow's own store API would not move it)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("serving", "_locks"))
    db = dst / "mlflow" / "mlflow.db"
    if db.exists():
        import sqlite3

        con = sqlite3.connect(db)
        old, new = (src / "mlflow").as_uri(), (dst / "mlflow").as_uri()
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                              ("model_versions", "source"), ("model_versions", "storage_location"),
                              ("logged_models", "artifact_location")):
            try:
                con.execute(f"UPDATE {table} SET {column} = REPLACE({column}, ?, ?)", (old, new))
            except sqlite3.OperationalError:  # a column this MLflow version does not have
                pass
        con.commit()
        con.close()
    return dst


class Prepared:
    """Roots at each stage of the cycle, made once by uncrashed runs, with each run's time."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.seconds: dict[str, float] = {}

    def root(self, stage: str) -> Path:
        path = self.base / stage
        if path.exists():
            return path
        parent, argv = STAGES[stage]
        if parent is None:
            path.mkdir(parents=True)
        else:
            copy_root(self.root(parent), path)
        run = run_p300(path, *argv)
        if stage == "deployed":
            stop_server(path)  # copies start their own server on their next deploy
        assert run.code == 0, f"preparing {stage}: {run.err[-3000:]}"
        self.seconds[stage] = run.seconds
        return path

    def copy(self, stage: str, dst: Path) -> Path:
        return copy_root(self.root(stage), dst)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    prep = Prepared(tmp_path_factory.mktemp("fault-roots"))
    yield prep
    for stage in STAGES:
        stop_server(prep.base / stage)


@pytest.fixture
def case_root(tmp_path: Path):
    """Where one case's copy lives; its endpoint server (if any) is stopped afterwards."""
    path = tmp_path / "root"
    yield path
    stop_server(path)


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


class Invariants:
    """What must hold after a crash and a rerun, checked against the uncrashed reference root."""

    def __init__(self, spark) -> None:
        self.spark = spark

    def _cfg(self, root: Path):
        from pipeline.config import load_config

        return load_config(root=str(root), env={})

    def _table(self, root: Path, name: str):
        from pipeline import storage

        return storage.read_table(self.spark, self._cfg(root), name)

    def same_table(self, root: Path, ref: Path, name: str, key: list[str], ignore: tuple[str, ...] = ()) -> None:
        """The whole table equals the reference: each key exactly once, every column alike
        (but ``ignore``d ones, such as a time of writing)."""
        from chispa import assert_df_equality
        from pyspark.sql import functions as F

        got, want = self._table(root, name), self._table(ref, name)
        dupes = got.groupBy(*key).count().where(F.col("count") > 1).limit(5).collect()
        assert not dupes, f"{name}: duplicated {key}: {dupes}"
        columns = sorted(c for c in want.columns if c not in ignore)
        assert_df_equality(got.select(*columns), want.select(*columns),
                           ignore_row_order=True, ignore_nullable=True)

    def one_final_row(self, root: Path, name: str, key: str, ok: tuple[str, ...]) -> dict:
        """Every file/subject has exactly one log row, and it says the work was done."""
        rows = self._table(root, name).select(key, "status").collect()
        per_key: dict = {}
        for r in rows:
            per_key.setdefault(r[key], []).append(r.status)
        bad = {k: v for k, v in per_key.items() if len(v) != 1 or v[0] not in ok}
        assert not bad, f"{name}: keys without exactly one final row: {bad}"
        return per_key

    def data(self, root: Path, ref: Path, through: str = "ingested") -> None:
        cfg = self._cfg(root)
        landing = [p.name for p in Path(cfg.landing_dir).iterdir() if not p.name.startswith((".", "_"))]
        assert landing == [], f"left unprocessed in the landing zone: {landing}"
        archived = sorted(p.name for p in Path(cfg.archive_dir).iterdir())
        assert archived == sorted(p.name for p in Path(self._cfg(ref).archive_dir).iterdir())
        self.same_table(root, ref, "raw_eeg", ["subject_id", "sample_idx"])
        files = self.one_final_row(root, "ingest_log", "file", ("ingested",))
        assert sorted(files) == archived
        if through == "preprocessed":
            self.same_table(root, ref, "features", ["subject_id", "epoch_idx"])
            subjects = self.one_final_row(root, "preprocess_log", "subject_id", ("ok",))
            assert len(subjects) == SUBJECTS

    def registry(self, root: Path) -> dict[str, str]:
        """Every version is complete (lineage tags, a finished run, a loadable model); aliases point at
        such versions; the endpoint, if any, serves what the aliases say. Returns alias -> version."""
        import mlflow

        from pipeline import registry as reg

        cfg = self._cfg(root)
        client = reg.mlflow_client(cfg)
        name = cfg.registry.model_name
        versions = client.search_model_versions(f"name = '{name}'")
        for mv in versions:
            missing = [t for t in (reg.TAG_FINGERPRINT, reg.PARAM_TRAINING_SUBJECTS, reg.PARAM_FEATURES_VERSION)
                       if t not in mv.tags]
            assert not missing, f"version {mv.version} lacks lineage tags {missing}"
            assert client.get_run(mv.run_id).info.status == "FINISHED", f"version {mv.version}: run not finished"
        fingerprints = [mv.tags[reg.TAG_FINGERPRINT] for mv in versions]
        assert len(fingerprints) == len(set(fingerprints)), f"a model registered twice: {fingerprints}"
        aliases = {}
        for alias in (reg.CHAMPION, reg.CHALLENGER):
            mv = reg.alias_version(client, cfg, alias)
            if mv is not None:
                aliases[alias] = str(mv.version)
                mlflow.set_registry_uri(cfg.registry_uri)
                local = mlflow.artifacts.download_artifacts(f"models:/{name}@{alias}")
                assert (Path(local) / "MLmodel").exists(), f"alias {alias}: no complete model"
        return aliases

    def endpoint(self, root: Path, aliases: dict[str, str]) -> None:
        from pipeline.deploy import versions_to_serve
        from pipeline.serving import get_endpoint, served_versions, workspace_client

        cfg = self._cfg(root)
        ep = get_endpoint(workspace_client(cfg), cfg.serving.endpoint_name)
        assert served_versions(ep) == versions_to_serve(aliases.get("champion"), aliases.get("challenger"))


@pytest.fixture
def p300():
    """``run_p300`` for tests that drive commands themselves."""
    return run_p300


@pytest.fixture
def invariants(spark) -> Invariants:
    return Invariants(spark)


def kill_and_rerun(prepared: Prepared, case_root: Path, stage: str, argv: tuple[str, ...], kill: tuple,
                   start: str | None = None) -> Run:
    """Copy the starting root (the stage's parent unless ``start`` says), run ``argv`` killed as
    ``kill`` says, then run it again. Time kills are shares of the uncrashed run time from
    ``start`` to ``stage``."""
    start = start or STAGES[stage][0]
    chain, s = [], stage
    while s != start:
        chain.append(s)
        prepared.root(s)  # the reference, which also measures the uncrashed time
        s = STAGES[s][0]
    prepared.copy(start, case_root)
    how, where = kill
    if how == "point":
        killed = run_p300(case_root, *argv, kill_at=where)
        assert killed.code == -signal.SIGKILL, f"kill point {where} never fired: {killed.err[-2000:]}"
    else:
        killed = run_p300(case_root, *argv, kill_after_s=where * sum(prepared.seconds[c] for c in chain))
    rerun = run_p300(case_root, *argv)
    assert rerun.code == 0, f"rerun after the kill failed:\n{rerun.err[-3000:]}"
    return rerun


@pytest.fixture
def fault_case(prepared: Prepared, case_root: Path):
    """kill_and_rerun bound to this test's prepared roots and case root."""
    def run(stage: str, argv: tuple[str, ...], kill: tuple, start: str | None = None) -> tuple[Path, Path]:
        kill_and_rerun(prepared, case_root, stage, argv, kill, start)
        return case_root, prepared.root(stage)
    return run
