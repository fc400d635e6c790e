"""Every data job through a real Spark Connect server (as serverless jobs and shared clusters
run them): ingest -> preprocess -> train -> score through `p300 connect serve`'s server, and
the tables equal a classic local run's on the same landing files.

The Connect client is a process of its own, as on serverless: PySpark chooses classic or
Connect for a whole process (its functions and Observation follow SPARK_CONNECT_MODE_ENABLED),
and this test process runs the classic session. The client gets a JAVA_HOME whose java
refuses to start: the jobs must not need a JVM of their own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from config_factory import user_env

from pipeline import connect_server, files
from pipeline.cli import run
from pipeline.config import load_config
from pipeline.storage import read_table
from pipeline.synth import synth_landing_zone

pytestmark = pytest.mark.connect

SUBJECTS = 4
# columns that differ between any two runs (ids, times) or say where a file went
VOLATILE = {"ingest_log": ["run_id", "time", "moved_to"], "preprocess_log": ["run_id", "time", "seconds"],
            "predictions": ["scored_at"]}
ORDER = {"raw_eeg": ["subject_id", "sample_idx"], "ingest_log": ["file"], "features": ["subject_id", "epoch_idx"],
         "preprocess_log": ["subject_id"], "predictions": ["subject_id", "epoch_idx"]}


def settings(root: Path, *extra: str) -> list[str]:
    sets = {"spark.master": "local[2]", "spark.shuffle_partitions": "2", "storage.raw_chunk_samples": "2048",
            "spark.jit": "c1", "training.cv_folds": "2"}
    out = ["--root", str(root), "-q"]
    for key, value in sets.items():
        out += ["--set", f"{key}={value}"]
    return out + list(extra)


STEPS = [["ingest"], ["preprocess"], ["train", "--train-fraction", "0.5"], ["score", "--alias", "challenger"]]

# the client process: the same steps through the server, then train's and evaluate's feature
# reads (feature_subjects, load_features) through Connect's Arrow batches, saved for the test
CLIENT = """
import json, sys, time
import numpy as np
from pipeline.cli import run
from pipeline.config import load_config
from pipeline.spark import get_spark, is_classic
from pipeline.tables import feature_subjects, load_features

job = json.loads(sys.argv[1])
t0 = time.perf_counter()
for argv in job["steps"]:
    assert run([*job["settings"], *argv], environ={}) == 0, argv
seconds = time.perf_counter() - t0
cfg = load_config(root=job["root"], env={}, overrides=["spark.remote=" + job["url"]])
spark = get_spark(cfg)
assert not is_classic(spark)
data = load_features(spark, cfg, [3, 4], 1)
np.savez(job["out"], X=data.X, y=data.y, groups=data.groups, subjects=feature_subjects(spark, cfg, 1),
         seconds=seconds)
"""


def flow(root: Path) -> float:
    """ingest -> preprocess -> train -> score on ``root`` in this process's classic session; seconds taken."""
    t0 = time.perf_counter()
    for argv in STEPS:
        assert run([*settings(root), *argv], environ={}) == 0, argv
    return time.perf_counter() - t0


def connect_flow(root: Path, url: str, out: Path, no_java: Path) -> dict:
    """The same steps in a Connect client process without a usable JVM; what it saved."""
    job = {"steps": STEPS, "settings": settings(root, "--set", f"spark.remote={url}"), "root": str(root),
           "url": url, "out": str(out)}
    env = user_env(JAVA_HOME=str(no_java), PATH=f"{no_java / 'bin'}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(job)], env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(out) as saved:
        return {k: saved[k] for k in saved.files}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("connect-server")
    cfg = load_config(root=str(root), env={}, overrides=["spark.master=local[2]", "spark.shuffle_partitions=2",
                                                         "spark.jit=c1"])
    info = connect_server.serve(cfg, master="local[2]")
    try:
        yield info
    finally:
        assert connect_server.stop(cfg) == info
        assert connect_server.running(cfg) is None


def test_the_server_command_has_connect_and_delta(root):
    cfg = load_config(root=str(root), env={}, overrides=[])
    cmd = connect_server.server_command(cfg, 15002, "local[2]")
    assert cmd[1:3] == ["--class", connect_server.SERVER_CLASS] and cmd[-1] == "spark-internal"
    assert "spark.connect.grpc.binding.port=15002" in cmd and "spark.connect.grpc.binding.address=127.0.0.1" in cmd
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in cmd


def test_plain_files_for_volumes_and_local_roots(tmp_path):
    src = tmp_path / "landing" / "a.parquet"
    src.parent.mkdir()
    src.write_bytes(b"0123456789PAR1")
    [entry] = files.list_dir(f"file:{src.parent}")
    assert (entry.name, entry.size, entry.is_dir, entry.local_path) == ("a.parquet", 14, False, str(src))
    assert files.read_range(str(src), -4, 4) == b"PAR1" and files.read_range(str(src), 2, 3) == b"234"
    with pytest.raises(EOFError):
        files.read_range(str(src), -20, 20)
    dst = tmp_path / "archive" / "a.parquet"
    files.move(str(src), str(dst))
    assert dst.exists() and not src.exists() and files.exists(str(dst))
    src.write_bytes(b"again")
    with pytest.raises(FileExistsError):
        files.move(str(src), str(dst))
    with pytest.raises(ValueError, match="not a local path"):
        files.exists("dbfs:/Volumes/x")
    assert files.list_dir(str(tmp_path / "missing")) == []


def test_ingest_preprocess_train_score_over_connect_equal_a_classic_run(spark, server, tmp_path, no_java_home):
    classic, remote = tmp_path / "classic", tmp_path / "remote"
    for root in (classic, remote):
        synth_landing_zone(str(root / "landing-zone"), subjects=SUBJECTS, minutes=0.5, n_channels=4, sfreq=128.0)
    seconds_classic = flow(classic)
    client = connect_flow(remote, server.url, tmp_path / "client.npz", no_java_home)
    print(f"\nclassic: {seconds_classic:.1f} s, Spark Connect: {float(client['seconds']):.1f} s "
          f"(ingest -> preprocess -> train -> score, {SUBJECTS} subjects)")
    assert sorted(os.listdir(remote / "archive")) == sorted(os.listdir(classic / "archive"))
    assert not (remote / "landing-zone").exists() or os.listdir(remote / "landing-zone") == []

    # evaluate's and train's reads: the same matrix through Connect's Arrow batches
    from pipeline.tables import feature_subjects, load_features

    cfg_classic = load_config(root=str(classic), env={}, overrides=[])
    assert client["subjects"].tolist() == feature_subjects(spark, cfg_classic, 1)
    b = load_features(spark, cfg_classic, [3, 4], 1)
    assert client["X"].shape[0] > 0 and (client["X"] == b.X).all()
    assert (client["y"] == b.y).all() and (client["groups"] == b.groups).all()

    for table, order in ORDER.items():
        def frame(root: Path):
            cfg = load_config(root=str(root), env={}, overrides=[])
            df = read_table(spark, cfg, table).drop(*VOLATILE.get(table, []))
            return df.orderBy(*order)
        if table == "predictions":  # the same model on Arrow batches cut elsewhere: BLAS may differ in the last bit
            assert_approx_df_equality(frame(remote), frame(classic), precision=1e-12, ignore_nullable=True)
        else:
            assert_df_equality(frame(remote), frame(classic), ignore_nullable=True)
