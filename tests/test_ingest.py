"""`p300 ingest` on a real local Spark + Delta: good files, every bad kind, duplicates, crashes."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from chispa.schema_comparer import assert_schema_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

import pipeline.ingest as ingest_mod
from pipeline import ingest_plan
from pipeline import storage
from pipeline.cli import run
from pipeline.ingest import ingest
from pipeline.tables import INGEST_LOG_SCHEMA, raw_samples
from pipeline.synth import subject_file_name, synth_subject, write_subject_file

SFREQ = 128.0


def landing(cfg) -> Path:
    return Path(cfg.landing_dir)


def deliver(cfg, sid: int, minutes: float = 1.0, seed: int = 0, name: str | None = None, frame=None) -> pd.DataFrame:
    frame = synth_subject(sid, minutes=minutes, n_channels=4, sfreq=SFREQ, seed=seed) if frame is None else frame
    write_subject_file(frame, landing(cfg) / (name or subject_file_name(sid)), SFREQ)
    return frame


def raw_counts(spark, cfg) -> dict[int, int]:
    """Samples per subject in raw_eeg (the sum of its chunks' n_samples)."""
    rows = storage.read_table(spark, cfg, "raw_eeg").groupBy("subject_id").agg(F.sum("n_samples").alias("n")).collect()
    return {r.subject_id: r.n for r in rows}


def log_rows(spark, cfg) -> pd.DataFrame:
    return storage.read_table(spark, cfg, "ingest_log").toPandas().sort_values(["file", "time"])


def names(path: str) -> list[str]:
    p = Path(path)
    return sorted(x.name for x in p.iterdir()) if p.exists() else []


RAW_SCHEMA = T.StructType([  # chunk rows (udfs/raw_chunks.py)
    T.StructField("subject_id", T.IntegerType(), False),
    T.StructField("sample_idx", T.LongType(), False),
    T.StructField("n_samples", T.IntegerType(), False),
    *[T.StructField(f"eeg_ch{i}", T.BinaryType(), True) for i in range(1, 5)],
    T.StructField("stim", T.BinaryType(), False),
    T.StructField("ingest_id", T.StringType(), False),
    T.StructField("sfreq", T.DoubleType(), False),
])
SAMPLES_SCHEMA = T.StructType([  # raw_samples(): the per-sample view
    T.StructField("subject_id", T.IntegerType(), False),
    T.StructField("sample_idx", T.LongType(), False),
    *[T.StructField(f"eeg_ch{i}", T.FloatType(), True) for i in range(1, 5)],
    T.StructField("stim", T.IntegerType(), False),
])


def files_elsewhere(monkeypatch) -> None:
    """Landing files as a non-local file system shows them (no local path): the JVM reads their bytes."""
    info = storage._info
    monkeypatch.setattr(storage, "_info", lambda status: dataclasses.replace(info(status), local_path=None))


@pytest.mark.parametrize("route", ["local path", "bytes through the JVM"])
def test_good_files_end_to_end_and_rerun_is_a_no_op(spark, cfg, capsys, monkeypatch, route):
    if route != "local path":
        files_elsewhere(monkeypatch)
    frames = {sid: deliver(cfg, sid) for sid in (1, 2)}
    (landing(cfg) / "subject_03_eeg_stim.parquet.tmp").write_bytes(b"still being written")
    code = run(["--root", cfg.root, "--set", "spark.master=local[2]", "ingest"], environ={})
    assert code == 0
    said = capsys.readouterr()
    assert "2 ingested, 0 replaced, 0 quarantined" in said.out
    assert "data checks: 2/2 files done (" in said.err and "raw_eeg write: 2/2 files done (" in said.err

    raw = storage.read_table(spark, cfg, "raw_eeg")
    assert_schema_equality(raw.schema, RAW_SCHEMA, ignore_nullable=False)
    assert raw_counts(spark, cfg) == {1: len(frames[1]), 2: len(frames[2])}
    # 7680 samples in chunks of 16384 (the CLI's default config): one row per subject
    assert sorted(tuple(r) for r in raw.select("subject_id", "sample_idx", "n_samples").collect()) == [
        (1, 0, len(frames[1])), (2, 0, len(frames[2]))]
    # the values and the sample order survive, sample for sample
    samples = raw_samples(spark, cfg)
    assert_schema_equality(samples.schema, SAMPLES_SCHEMA, ignore_nullable=False)
    src = frames[2].assign(subject_id=np.int32(2), sample_idx=np.arange(len(frames[2]), dtype=np.int64))
    expected = spark.createDataFrame(src).select(*[F.col(c).cast(SAMPLES_SCHEMA[c].dataType) for c in SAMPLES_SCHEMA.names])
    assert_df_equality(raw_samples(spark, cfg, subjects=[2]), expected, ignore_row_order=True, ignore_nullable=True)
    assert samples.count() == len(frames[1]) + len(frames[2])
    assert raw.select("sfreq").distinct().collect()[0][0] == SFREQ

    log = storage.read_table(spark, cfg, "ingest_log")
    assert_schema_equality(log.schema, INGEST_LOG_SCHEMA, ignore_nullable=False)
    pdf = log.toPandas()
    assert sorted(pdf["status"]) == ["ingested", "ingested"] and pdf["raw_version"].notna().all()
    assert names(cfg.archive_dir) == ["subject_01_eeg_stim.parquet", "subject_02_eeg_stim.parquet"]
    assert names(cfg.landing_dir) == ["subject_03_eeg_stim.parquet.tmp"]  # in-flight files are left alone

    versions = (storage.table_version(spark, cfg, "raw_eeg"), storage.table_version(spark, cfg, "ingest_log"))
    assert ingest(spark, cfg).decisions == []
    assert (storage.table_version(spark, cfg, "raw_eeg"), storage.table_version(spark, cfg, "ingest_log")) == versions


def _write_table(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_every_bad_input_kind_is_quarantined_while_the_rest_ingests(spark, cfg, capsys):
    good = deliver(cfg, 1)
    base = synth_subject(2, minutes=0.5, n_channels=4, sfreq=SFREQ)
    land = landing(cfg)
    cases = {  # file -> expected kind
        "notes.txt": "bad_name",
        "subject_7_eeg_stim.parquet": "bad_name",          # one digit
        "subject_10_eeg_stim.parquet": "unreadable",
        "subject_11_eeg_stim.parquet": "no_stim",
        "subject_12_eeg_stim.parquet": "no_channels",
        "subject_13_eeg_stim.parquet": "non_numeric",
        "subject_14_eeg_stim.parquet": "nan_channels",
        "subject_15_eeg_stim.parquet": "no_events",
        "subject_16_eeg_stim.parquet": "bad_sfreq",
        "subject_17_eeg_stim.parquet": "bad_channels",
        "subject_18_eeg_stim.parquet": "empty",
        "subject_19_eeg_stim.parquet": "bad_stim",
        "subject_20_eeg_stim.parquet": "unreadable",         # the footer parses, the data does not
    }
    (land / "notes.txt").write_text("not eeg")
    write_subject_file(base, land / "subject_7_eeg_stim.parquet", SFREQ)
    (land / "subject_10_eeg_stim.parquet").write_bytes(b"PAR1 truncated garbage")
    write_subject_file(base.drop(columns="stim"), land / "subject_11_eeg_stim.parquet", SFREQ)
    write_subject_file(base[["stim"]], land / "subject_12_eeg_stim.parquet", SFREQ)
    write_subject_file(base.assign(eeg_ch3=base["eeg_ch3"].astype(str)), land / "subject_13_eeg_stim.parquet", SFREQ)
    write_subject_file(base.assign(eeg_ch2=np.float32("nan")), land / "subject_14_eeg_stim.parquet", SFREQ)
    write_subject_file(base.assign(stim=np.int32(0)), land / "subject_15_eeg_stim.parquet", SFREQ)
    t = pa.Table.from_pandas(base, preserve_index=False)
    _write_table(land / "subject_16_eeg_stim.parquet", t.replace_schema_metadata({b"sfreq": b"fast"}))
    write_subject_file(base.drop(columns="eeg_ch2"), land / "subject_17_eeg_stim.parquet", SFREQ)
    write_subject_file(base.iloc[:0], land / "subject_18_eeg_stim.parquet", SFREQ)
    write_subject_file(base.assign(stim=base["stim"].astype(np.float32) + 0.5), land / "subject_19_eeg_stim.parquet",
                       SFREQ)

    corrupt = land / "subject_20_eeg_stim.parquet"
    write_subject_file(base, corrupt, SFREQ)
    data = bytearray(corrupt.read_bytes())
    data[100:20000] = bytes(19900)  # zero the first column chunks' pages, keep the footer
    corrupt.write_bytes(bytes(data))

    assert run(["--root", cfg.root, "--set", "spark.master=local[2]", "ingest"], environ={}) == 0
    out = capsys.readouterr().out
    assert "1 ingested, 0 replaced, 13 quarantined" in out and "rejected 13 file(s)" in out

    assert raw_counts(spark, cfg) == {1: len(good)}
    log = log_rows(spark, cfg).set_index("file")
    assert log.loc["subject_01_eeg_stim.parquet", "status"] == "ingested"
    bad = log.drop(index="subject_01_eeg_stim.parquet")
    assert bad["status"].eq("quarantined").all() and bad["reason"].str.len().gt(10).all()
    assert bad["kind"].to_dict() == cases
    assert "eeg_ch2" in bad.loc["subject_14_eeg_stim.parquet", "reason"]
    assert "eeg_ch2" in bad.loc["subject_17_eeg_stim.parquet", "reason"]
    assert "data cannot be read" in bad.loc["subject_20_eeg_stim.parquet", "reason"]
    assert names(cfg.quarantine_dir) == sorted(cases)  # nothing lost: every original kept
    assert names(cfg.archive_dir) == ["subject_01_eeg_stim.parquet"] and names(cfg.landing_dir) == []


def test_duplicates_replace_and_batches(spark, cfg):
    for sid in (1, 2, 3):
        deliver(cfg, sid)
    s = ingest(spark, cfg, max_subjects=2)
    assert [(d.info.name, d.status) for d in s.decisions] == [
        ("subject_01_eeg_stim.parquet", "ingested"), ("subject_02_eeg_stim.parquet", "ingested"),
        ("subject_03_eeg_stim.parquet", "deferred")]
    assert names(cfg.landing_dir) == ["subject_03_eeg_stim.parquet"]

    # subject 1 again (a different recording), and subject 3 twice in one batch
    newer = deliver(cfg, 1, minutes=1.5, seed=7)
    deliver(cfg, 3, name="subject_003_eeg_stim.parquet", seed=3)
    s = ingest(spark, cfg)
    status = {d.info.name: (d.status, d.kind) for d in s.decisions}
    assert status == {"subject_01_eeg_stim.parquet": ("quarantined", "duplicate"),
                      "subject_003_eeg_stim.parquet": ("ingested", None),  # first by name wins
                      "subject_03_eeg_stim.parquet": ("quarantined", "duplicate")}
    before = raw_counts(spark, cfg)
    assert before == {1: 7680, 2: 7680, 3: 7680}

    # --replace: the re-delivered recording replaces subject 1's rows (never adds to them)
    write_subject_file(newer, landing(cfg) / "subject_01_eeg_stim.parquet", SFREQ)
    old_id = storage.read_table(spark, cfg, "raw_eeg").where("subject_id = 1").select("ingest_id").first()[0]
    s = ingest(spark, cfg, replace=True)
    assert [(d.status, d.kind) for d in s.decisions] == [("replaced", None)]
    assert raw_counts(spark, cfg) == {**before, 1: len(newer)}
    new_ids = storage.read_table(spark, cfg, "raw_eeg").where("subject_id = 1").select("ingest_id").distinct().collect()
    assert len(new_ids) == 1 and new_ids[0][0] != old_id
    assert "subject_01_eeg_stim.parquet" in names(cfg.archive_dir) and len(names(cfg.archive_dir)) == 4

    # an identical copy of an ingested file is a duplicate too, even with --replace, every time
    for _ in range(2):
        write_subject_file(newer, landing(cfg) / "subject_01_eeg_stim.parquet", SFREQ)
        s = ingest(spark, cfg, replace=True)
        assert [(d.status, d.kind) for d in s.decisions] == [("quarantined", "duplicate")]
        assert "identical" in s.decisions[0].reason
    assert raw_counts(spark, cfg)[1] == len(newer)
    assert len(names(cfg.quarantine_dir)) == 4  # two earlier duplicates + these two, none overwritten


def test_crash_between_write_and_move_leaves_no_duplicates(spark, cfg, monkeypatch):
    frames = {sid: deliver(cfg, sid) for sid in (1, 2)}
    (landing(cfg) / "junk.bin").write_bytes(b"x")

    calls = []

    def crash_on_second_move(src, dst, real=storage.move_file):
        calls.append(src)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        real(spark, src, dst)

    monkeypatch.setattr(ingest_mod.storage, "move_file", lambda _s, src, dst: crash_on_second_move(src, dst))
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest(spark, cfg)
    monkeypatch.undo()
    assert raw_counts(spark, cfg) == {1: 7680, 2: 7680}
    assert len(names(cfg.landing_dir)) == 2  # one file moved, two still waiting

    s = ingest(spark, cfg)
    assert sorted(d.status for d in s.decisions) == ["finish_move", "finish_move"]
    assert raw_counts(spark, cfg) == {sid: len(f) for sid, f in frames.items()}
    log = log_rows(spark, cfg)
    assert len(log) == 3 and log["file"].is_unique  # one row per file, none repeated
    assert names(cfg.landing_dir) == [] and names(cfg.quarantine_dir) == ["junk.bin"]
    assert ingest(spark, cfg).decisions == []


def test_crash_between_write_and_log_is_recovered(spark, cfg, monkeypatch):
    deliver(cfg, 1)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash before the log commit")

    monkeypatch.setattr(ingest_mod, "_append_log", crash)
    with pytest.raises(RuntimeError):
        ingest(spark, cfg)
    monkeypatch.undo()
    version = storage.table_version(spark, cfg, "raw_eeg")
    assert raw_counts(spark, cfg) == {1: 7680} and not storage.table_exists(spark, cfg, "ingest_log")

    s = ingest(spark, cfg)
    assert [(d.status, d.kind) for d in s.decisions] == [("ingested", "recovered")]
    assert storage.table_version(spark, cfg, "raw_eeg") == version  # not written again
    assert raw_counts(spark, cfg) == {1: 7680}
    assert log_rows(spark, cfg)["status"].tolist() == ["ingested"]
    assert names(cfg.archive_dir) == ["subject_01_eeg_stim.parquet"]


def test_hadoop_file_helpers(spark, tmp_path):
    src = tmp_path / "a" / "f.bin"
    src.parent.mkdir()
    src.write_bytes(b"0123456789")
    assert storage.read_range(spark, str(src), -4, 4) == b"6789"
    assert storage.read_range(spark, str(src), 2, 3) == b"234"
    big = tmp_path / "big.bin"  # longer than the pieces py4j hands back (storage._PY4J_PIECE)
    data = np.random.default_rng(0).bytes(50_000)
    big.write_bytes(data)
    assert storage.read_range(spark, str(big), -20_001, 20_001) == data[-20_001:]
    assert storage.read_range(spark, str(big), 4095, 4097) == data[4095:8192]
    assert storage.read_range(spark, str(big), 0, 0) == b""
    with pytest.raises(EOFError):
        storage.read_range(spark, str(big), 49_999, 2)
    assert [(f.name, f.local_path) for f in storage.list_files(spark, str(tmp_path / "a"))] == [("f.bin", str(src))]
    odd = tmp_path / "a b%20c.bin"  # the local path is decoded, not the URI's spelling
    odd.write_bytes(b"x")
    assert storage.file_info(spark, str(odd)).local_path == str(odd)
    odd.unlink()
    assert storage.list_files(spark, str(tmp_path / "missing")) == []
    dst = str(tmp_path / "b" / "c" / "f.bin")
    storage.move_file(spark, str(src), dst)
    assert storage.path_exists(spark, dst) and not src.exists()
    (tmp_path / "a" / "g.bin").write_bytes(b"")
    with pytest.raises(FileExistsError):
        storage.move_file(spark, str(tmp_path / "a" / "g.bin"), dst)


def test_a_file_too_large_for_one_binary_cell_is_quarantined(spark, cfg, monkeypatch):
    monkeypatch.setattr(ingest_plan, "MAX_FILE_BYTES", 1000)
    deliver(cfg, 1)
    assert ingest(spark, cfg).count("ingested") == 1  # a local file never passes through the JVM whole
    deliver(cfg, 2)
    files_elsewhere(monkeypatch)
    summary = ingest(spark, cfg)
    assert [(d.status, d.kind) for d in summary.decisions] == [("quarantined", "too_large")]
    assert "binary cell" in summary.decisions[0].reason
    assert names(cfg.quarantine_dir) == ["subject_02_eeg_stim.parquet"]
