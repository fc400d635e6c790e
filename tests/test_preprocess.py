"""`p300 preprocess`: one applyInPandas over the pending subjects, failure isolation, reruns."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from chispa import assert_df_equality
from chispa.schema_comparer import assert_schema_equality
from pyspark.sql import functions as F

import pipeline.preprocess as pp
from pipeline import storage
from pipeline.cli import run
from pipeline.ingest import ingest
from pipeline.preprocess import balanced_partitions, preprocess, spark_partition_hash
from pipeline.tables import FEATURES_SCHEMA, PREPROCESS_LOG_SCHEMA
from pipeline.synth import subject_file_name, synth_subject, write_subject_file
from udfs.preprocess import Settings, preprocess_subject

SFREQ = 128.0


def deliver(cfg, sid: int, sfreq: float = SFREQ, transform=None):
    frame = synth_subject(sid, minutes=1.0, n_channels=4, sfreq=sfreq, seed=0)
    if transform is not None:
        frame = transform(frame)
    write_subject_file(frame, Path(cfg.landing_dir) / subject_file_name(sid), sfreq)
    return frame


def expected_features(spark, cfg, sid: int, frame, sfreq: float = SFREQ):
    raw = frame.assign(subject_id=np.int32(sid), sample_idx=np.arange(len(frame), dtype=np.int64))
    out = preprocess_subject(raw, Settings.from_config(cfg, sfreq))
    out["features"] = [f.tolist() for f in out["features"]]
    return spark.createDataFrame(out, FEATURES_SCHEMA)


def counts(df) -> dict[int, int]:
    return {r.subject_id: r["count"] for r in df.groupBy("subject_id").count().collect()}


def test_spark_partition_hash_matches_spark(spark):
    ids = [-5, 0, 1, 2, 3, 17, 123456, 2**31 - 1]
    got = {r.i: r.h for r in spark.createDataFrame([(i,) for i in ids], "i int")
           .select("i", F.hash("i").alias("h")).collect()}
    assert got == {i: spark_partition_hash(i) for i in ids}
    n = balanced_partitions([1, 2, 3, 4, 5])
    assert n >= 5 and len({spark_partition_hash(s) % n for s in [1, 2, 3, 4, 5]}) == 5
    many = list(range(1, 101))  # none of 100..150 separates 100 subjects: the best of them
    distinct = {n: len({spark_partition_hash(s) % n for s in many}) for n in range(100, 151)}
    n = balanced_partitions(many, limit=150)
    assert distinct[n] == max(distinct.values()) < 100
    n = balanced_partitions(many)
    assert len({spark_partition_hash(s) % n for s in many}) == 100


def test_good_subjects_failures_isolated_rerun_and_reprocess(spark, cfg, capsys, monkeypatch):
    frames = {1: deliver(cfg, 1), 2: deliver(cfg, 2, sfreq=256.0)}
    deliver(cfg, 3, transform=lambda f: f.assign(**{c: f[c] * 40 for c in f.columns if c.startswith("eeg")}))
    deliver(cfg, 4, transform=lambda f: f.assign(stim=np.where(np.arange(len(f)) == 5, 2, 0).astype(np.int32)))
    assert ingest(spark, cfg).count("ingested") == 4
    # a subject whose raw chunks have a hole (written around ingest): the function raises for it
    holey = (storage.read_table(spark, cfg, "raw_eeg").where("subject_id = 1 and sample_idx != 2048")
             .withColumn("subject_id", F.lit(5)).withColumn("ingest_id", F.lit("manual")))
    holey.write.format("delta").mode("append").save(cfg.table("raw_eeg"))
    raw_version = storage.table_version(spark, cfg, "raw_eeg")

    assert run(["--root", cfg.root, "--set", "spark.master=local[2]", "preprocess"], environ={}) == 0
    said = capsys.readouterr()
    assert "2 ok, 2 empty, 1 failed" in said.out
    assert "[p300] preprocess: 5/5 subjects done (" in said.err  # progress: one task per subject

    features = storage.read_table(spark, cfg, "features")
    assert_schema_equality(features.schema, FEATURES_SCHEMA, ignore_nullable=False)
    assert_df_equality(features.where("subject_id = 1"), expected_features(spark, cfg, 1, frames[1]),
                       ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(features.where("subject_id = 2"), expected_features(spark, cfg, 2, frames[2], 256.0),
                       ignore_row_order=True, ignore_nullable=True)  # the file's own rate (Parquet metadata)
    assert set(features.select(F.size("features")).distinct().toPandas().iloc[:, 0]) == {4 * 71}

    log = storage.read_table(spark, cfg, "preprocess_log")
    assert_schema_equality(log.schema, PREPROCESS_LOG_SCHEMA, ignore_nullable=False)
    rows = log.toPandas().set_index("subject_id").sort_index()
    assert rows["status"].to_dict() == {1: "ok", 2: "ok", 3: "empty", 4: "empty", 5: "failed"}
    assert "rejected" in rows.loc[3, "reason"] and "edges" in rows.loc[4, "reason"]
    assert "sample_idx" in rows.loc[5, "reason"]
    assert rows["raw_version"].eq(raw_version).all()
    assert rows.loc[1, "n_epochs"] == counts(features)[1] and rows.loc[2, "sfreq"] == 256.0
    assert rows.loc[1, "n_samples"] == len(frames[1]) and rows.loc[2, "n_samples"] == len(frames[2])
    assert rows.loc[5, "n_samples"] == len(frames[1]) - 2048  # counted from the chunk rows of a failed subject too
    commit = storage.delta_table(spark, cfg, "features").history(1).first()
    assert json.loads(commit.userMetadata)["raw_version"] == raw_version

    # rerun: nothing pending, nothing written
    versions = (storage.table_version(spark, cfg, "features"), storage.table_version(spark, cfg, "preprocess_log"))
    assert preprocess(spark, cfg).log == []
    assert (storage.table_version(spark, cfg, "features"), storage.table_version(spark, cfg, "preprocess_log")) == versions

    # --reprocess: one atomic commit replaces subject 1's rows, others untouched
    before = counts(features)
    s = preprocess(spark, cfg, subjects=[1], reprocess=True)
    assert [r["subject_id"] for r in s.log] == [1] and s.features_version == versions[0] + 1
    assert counts(storage.read_table(spark, cfg, "features")) == before
    assert_df_equality(storage.read_table(spark, cfg, "features").where("subject_id = 2"),
                       storage.read_table(spark, cfg, "features", versions[0]).where("subject_id = 2"),
                       ignore_row_order=True)

    # a job that dies half way (subject 2's task crashes after subject 1's succeeded) commits nothing
    real = pp._subject_function

    def crashing(base, info):
        inner = real(base, info)

        def apply(raw):
            if int(raw["subject_id"].iloc[0]) == 2:
                raise RuntimeError("simulated executor crash")
            return inner(raw)
        return apply

    monkeypatch.setattr(pp, "_subject_function", crashing)
    version = storage.table_version(spark, cfg, "features")
    with pytest.raises(Exception, match="simulated executor crash"):
        preprocess(spark, cfg, subjects=[1, 2], reprocess=True)
    monkeypatch.undo()
    assert storage.table_version(spark, cfg, "features") == version
    assert counts(storage.read_table(spark, cfg, "features")) == before


def test_one_task_per_subject_and_no_empty_tasks(spark, cfg, tmp_path, monkeypatch):
    subjects = [8, 9, 21, 27]  # no two share a partition only at 23 partitions: 19 would be empty
    assert balanced_partitions(subjects) == 23
    for sid in subjects:
        deliver(cfg, sid)
    assert ingest(spark, cfg).count("ingested") == 4
    seen = tmp_path / "tasks"
    real = pp._subject_function

    def recording(base, info):
        inner = real(base, info)

        def apply(raw):
            from pyspark import TaskContext

            with open(seen, "a") as f:
                ctx = TaskContext.get()
                f.write(f"{int(raw['subject_id'].iloc[0])} {ctx.stageId()} {ctx.partitionId()}\n")
            return inner(raw)
        return apply

    monkeypatch.setattr(pp, "_subject_function", recording)
    assert preprocess(spark, cfg).count("ok") == 4
    calls = [line.split() for line in seen.read_text().splitlines()]
    assert sorted(int(sid) for sid, _, _ in calls) == subjects
    assert len({(stage, part) for _, stage, part in calls}) == 4  # no task ran two subjects
    (stage,) = {int(stage) for _, stage, _ in calls}
    assert spark.sparkContext.statusTracker().getStageInfo(stage).numTasks == 4  # and none ran zero
    assert spark.conf.get("spark.sql.shuffle.partitions") != "23"  # the job's settings were restored


def test_replaced_raw_data_is_preprocessed_again(spark, cfg):
    deliver(cfg, 1)
    ingest(spark, cfg)
    first = preprocess(spark, cfg)
    assert [r["status"] for r in first.log] == ["ok"]
    newer = synth_subject(1, minutes=1.5, n_channels=4, sfreq=SFREQ, seed=9)
    write_subject_file(newer, Path(cfg.landing_dir) / subject_file_name(1), SFREQ)
    assert ingest(spark, cfg, replace=True).count("replaced") == 1
    second = preprocess(spark, cfg)
    assert [(r["subject_id"], r["status"]) for r in second.log] == [(1, "ok")]
    assert second.log[0]["ingest_id"] != first.log[0]["ingest_id"]
    assert_df_equality(storage.read_table(spark, cfg, "features"), expected_features(spark, cfg, 1, newer),
                       ignore_row_order=True, ignore_nullable=True)
    assert preprocess(spark, cfg).log == []


def test_a_per_sample_raw_table_of_an_earlier_version(spark, cfg):
    """Preprocessing still reads the old one-row-per-sample layout; ingest refuses to mix layouts."""
    frame = synth_subject(1, minutes=1.0, n_channels=4, sfreq=SFREQ, seed=0)
    old = frame.assign(subject_id=np.int32(1), sample_idx=np.arange(len(frame), dtype=np.int64),
                       ingest_id="old", sfreq=SFREQ)
    spark.createDataFrame(old).write.format("delta").partitionBy("subject_id").save(cfg.table("raw_eeg"))
    summary = preprocess(spark, cfg)
    assert [(r["subject_id"], r["status"]) for r in summary.log] == [(1, "ok")]
    assert_df_equality(storage.read_table(spark, cfg, "features"), expected_features(spark, cfg, 1, frame),
                       ignore_row_order=True, ignore_nullable=True)
    deliver(cfg, 2)
    with pytest.raises(RuntimeError, match="old one-row-per-sample layout"):
        ingest(spark, cfg)
    assert (Path(cfg.landing_dir) / subject_file_name(2)).exists()  # nothing moved, nothing lost


def test_subjects_with_different_channel_counts_share_raw_eeg(spark, cfg):
    """A wider file adds channel columns (schema merge); a narrower one leaves them null."""
    def deliver_width(sid: int, width: int) -> None:
        frame = synth_subject(sid, minutes=0.5, n_channels=width, sfreq=SFREQ, seed=0)
        write_subject_file(frame, Path(cfg.landing_dir) / subject_file_name(sid), SFREQ)

    deliver_width(1, 4)
    ingest(spark, cfg)
    deliver_width(2, 6)
    deliver_width(3, 2)
    assert ingest(spark, cfg).count("ingested") == 2
    raw = storage.read_table(spark, cfg, "raw_eeg")
    assert [c for c in raw.columns if c.startswith("eeg_ch")] == [f"eeg_ch{i}" for i in range(1, 7)]
    nulls = {r.subject_id: r.n for r in raw.groupBy("subject_id").agg(F.sum(F.col("eeg_ch5").isNull().cast("int")).alias("n")).collect()}
    assert nulls[2] == 0 and nulls[1] > 0 and nulls[3] > 0
    summary = preprocess(spark, cfg)
    assert [(r["subject_id"], r["status"], r["n_channels"]) for r in summary.log] == [(1, "ok", 4), (2, "ok", 6), (3, "ok", 2)]
    sizes = {r.subject_id: r.n for r in storage.read_table(spark, cfg, "features")
             .groupBy("subject_id").agg(F.max(F.size("features")).alias("n")).collect()}
    assert sizes == {1: 4 * 71, 2: 6 * 71, 3: 2 * 71}


def test_a_recording_handed_over_one_chunk_row_per_batch_gives_the_same_features(spark, cfg, monkeypatch):
    """Long recordings travel in bounded batches (raw_chunks.BATCH_BYTES); here every batch is one row."""
    from udfs import raw_chunks

    monkeypatch.setattr(raw_chunks, "BATCH_BYTES", 1)
    confs = []
    session_conf = storage.session_conf
    monkeypatch.setattr(storage, "session_conf", lambda s, conf: confs.append(dict(conf)) or session_conf(s, conf))
    frame = deliver(cfg, 1)  # 7680 samples: four 2048-sample chunk rows
    assert ingest(spark, cfg).count("ingested") == 1
    assert [(r["subject_id"], r["status"]) for r in preprocess(spark, cfg).log] == [(1, "ok")]
    assert confs[-1]["spark.sql.execution.arrow.maxRecordsPerBatch"] == "1"
    assert confs[-1]["spark.sql.parquet.columnarReaderBatchSize"] == "1"
    assert_df_equality(storage.read_table(spark, cfg, "features"), expected_features(spark, cfg, 1, frame),
                       ignore_row_order=True, ignore_nullable=True)
