"""Table creation after a crash during creation (the `_staged_commits`-only wedge).

Each state below is what a process killed inside Delta's table creation (or inside a
first write) leaves: the folders are built byte for byte as found after such kills.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import types as T

from pipeline import storage
from pipeline.synth import subject_file_name, synth_subject, write_subject_file
from pipeline.table_recovery import DamagedTable

pytestmark = pytest.mark.spark

SCHEMA = T.StructType([T.StructField("subject_id", T.IntegerType(), False), T.StructField("x", T.LongType(), True)])


def _log(cfg, name: str) -> Path:
    return Path(cfg.table(name)) / "_delta_log"


def _create_and_use(spark, cfg, name: str) -> None:
    assert storage.create_table(spark, cfg, name, SCHEMA, ["subject_id"])
    df = spark.createDataFrame([(1, 10), (2, 20)], SCHEMA)
    storage.save(df.write.format("delta").mode("append"), cfg, name)
    assert_df_equality(storage.read_table(spark, cfg, name), df, ignore_row_order=True)
    assert storage.table_version(spark, cfg, name) == 1


@pytest.mark.parametrize("leftover", ["staged_dir", "empty_log", "temp_commit"])
def test_a_log_without_a_commit_counts_as_not_created(spark, cfg, leftover):
    log = _log(cfg, "ingest_log")
    log.mkdir(parents=True)
    if leftover == "staged_dir":  # the wedged state: `ls _delta_log` -> _staged_commits
        (log / "_staged_commits").mkdir()
    elif leftover == "temp_commit":  # the log store's temporary commit file, not yet renamed
        (log / "_staged_commits").mkdir()
        (log / ".00000000000000000000.json.5c1d7a1e-0f7b-4bd4-9a55-3c0a7e2e2b0c.tmp").write_text('{"commitInfo":')
    assert not storage.table_exists(spark, cfg, "ingest_log")
    _create_and_use(spark, cfg, "ingest_log")


def test_uncommitted_data_files_are_moved_aside_not_deleted(spark, cfg):
    """A first write killed after its data files, before its commit: the files stay, beside the table."""
    location = Path(cfg.table("features"))
    spark.createDataFrame([(7, 70)], SCHEMA).write.partitionBy("subject_id").parquet(str(location))
    (location / "_delta_log" / "_staged_commits").mkdir(parents=True)
    orphans = sorted(p.name for p in (location / "subject_id=7").glob("*.parquet"))
    _create_and_use(spark, cfg, "features")
    aside = [p for p in location.parent.iterdir() if p.name.startswith("features.uncommitted-")]
    assert len(aside) == 1
    assert sorted(p.name for p in (aside[0] / "subject_id=7").glob("*.parquet")) == orphans


def test_a_folder_holding_a_commit_is_never_touched(spark, cfg):
    _create_and_use(spark, cfg, "predictions")
    before = sorted(p.relative_to(cfg.local_root) for p in Path(cfg.table("predictions")).rglob("*"))
    assert not storage.create_table(spark, cfg, "predictions", SCHEMA)
    assert sorted(p.relative_to(cfg.local_root) for p in Path(cfg.table("predictions")).rglob("*")) == before


def test_a_log_delta_cannot_read_is_left_alone_with_a_clear_error(spark, cfg):
    """A log with a checkpoint pointer but no readable commit is damage, not a crash leftover."""
    log = _log(cfg, "preprocess_log")
    log.mkdir(parents=True)
    (log / "_last_checkpoint").write_text('{"version":3,"size":1}')
    data = Path(cfg.table("preprocess_log")) / "part-00000.parquet"
    data.write_bytes(b"PAR1")
    with pytest.raises(DamagedTable, match=r"preprocess_log.*_last_checkpoint.*left as it is"):
        storage.create_table(spark, cfg, "preprocess_log", SCHEMA)
    assert (log / "_last_checkpoint").exists() and data.exists()


def test_ingest_converges_on_the_wedged_root(spark, cfg):
    """The wedge: the first ingest killed while creating raw_eeg; every rerun failed."""
    from pipeline.ingest import ingest

    frame = synth_subject(1, minutes=0.5, n_channels=4, sfreq=128.0, seed=0)
    write_subject_file(frame, Path(cfg.landing_dir) / subject_file_name(1), 128.0)
    (_log(cfg, "raw_eeg") / "_staged_commits").mkdir(parents=True)
    summary = ingest(spark, cfg)
    assert summary.count("ingested") == 1
    assert storage.read_table(spark, cfg, "raw_eeg").select("subject_id").distinct().collect()[0][0] == 1
    assert sorted(p.name for p in Path(cfg.archive_dir).iterdir()) == [subject_file_name(1)]
