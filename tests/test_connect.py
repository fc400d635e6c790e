"""Every data job through a real Spark Connect server (as serverless jobs and shared clusters
run them): ingest -> preprocess -> train -> score through `p300 connect serve`'s server, and
the tables equal a classic local run's on the same landing files."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from chispa import assert_df_equality

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


def flow(root: Path, *extra: str) -> float:
    """ingest -> preprocess -> train -> score on ``root``; seconds taken."""
    t0 = time.perf_counter()
    for argv in (["ingest"], ["preprocess"], ["train", "--train-fraction", "0.5"], ["score", "--alias", "challenger"]):
        assert run([*settings(root, *extra), *argv], environ={}) == 0, argv
    return time.perf_counter() - t0


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


def test_ingest_preprocess_train_score_over_connect_equal_a_classic_run(spark, server, tmp_path, capsys):
    classic, remote = tmp_path / "classic", tmp_path / "remote"
    for root in (classic, remote):
        synth_landing_zone(str(root / "landing-zone"), subjects=SUBJECTS, minutes=0.5, n_channels=4, sfreq=128.0)
    seconds_classic = flow(classic)
    seconds_remote = flow(remote, "--set", f"spark.remote={server.url}")
    print(f"\nclassic: {seconds_classic:.1f} s, Spark Connect: {seconds_remote:.1f} s "
          f"(ingest -> preprocess -> train -> score, {SUBJECTS} subjects)")
    assert sorted(os.listdir(remote / "archive")) == sorted(os.listdir(classic / "archive"))
    assert not (remote / "landing-zone").exists() or os.listdir(remote / "landing-zone") == []

    # evaluate's and train's reads: the same matrix through Connect's Arrow batches
    from pyspark.sql import SparkSession

    from pipeline.tables import feature_subjects, load_features

    remote_session = SparkSession.builder.remote(server.url).getOrCreate()
    cfg_classic = load_config(root=str(classic), env={}, overrides=[])
    cfg_remote = load_config(root=str(remote), env={}, overrides=[])
    assert feature_subjects(remote_session, cfg_remote, 1) == feature_subjects(spark, cfg_classic, 1)
    a = load_features(remote_session, cfg_remote, [3, 4], 1)
    b = load_features(spark, cfg_classic, [3, 4], 1)
    assert a.X.shape[0] > 0 and (a.X == b.X).all() and (a.y == b.y).all() and (a.groups == b.groups).all()

    for table, order in ORDER.items():
        def frame(root: Path):
            cfg = load_config(root=str(root), env={}, overrides=[])
            df = read_table(spark, cfg, table).drop(*VOLATILE.get(table, []))
            return df.orderBy(*order)
        assert_df_equality(frame(remote), frame(classic), ignore_nullable=True)
