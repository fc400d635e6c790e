"""`p300 ingest`: landing-zone subject files -> the raw_eeg Delta table, exactly once per file.

One run:

1. lists the landing zone through Hadoop's FileSystem API (so ``dbfs:/`` roots work) and
   reads each file's Parquet footer only (schema, row count, the ``sfreq`` metadata key);
   a file's *ingest id* is a hash of its subject, size and footer;
2. decides per file, against what raw_eeg and ingest_log already hold: ingest, replace
   (``--replace``), quarantine (the raw input contract's bad kinds, duplicates), recover
   (the data of an interrupted run is already in raw_eeg), or finish an interrupted move;
3. checks the data of the files to ingest in ONE Spark job (NaN/inf channels, events,
   whole-number stim codes) and writes all the good ones in ONE Delta commit: an
   overwrite with ``replaceWhere subject_id IN (...)``, so a retried write replaces
   rather than duplicates; each row (a chunk of samples, udfs/raw_chunks.py) carries
   the file's ``ingest_id`` and ``sfreq``. Both jobs hand out one file per task with
   Spark's ``binaryFile`` source and decode it with pyarrow on the executors
   (udfs/landing.py): local files by path, others as the bytes the JVM read;
4. appends one ingest_log row per file (one commit), each naming the destination;
5. moves the originals to archive/ or quarantine/.

A crash anywhere leaves a state the next run completes without duplicates: data written
but not logged is recognised by its ingest id in raw_eeg; a logged file still in the
landing zone is moved to the destination its log row names.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from pipeline import storage
from pipeline.config import Config
from pipeline.faults import kill_point
from pipeline.ingest_plan import Destinations, FileDecision, footer_length, is_input, parse_subject_id, plan_files
from pipeline.job_progress import job_progress
from pipeline.locks import root_lock
from pipeline.storage_errors import explain
from pipeline.report import Reporter
from pipeline.tables import (INGEST_LOG, INGEST_LOG_SCHEMA, OK_STATUSES, RAW_EEG, RAW_TABLE_PROPERTIES, append_rows,
                             log_rows, raw_channels, raw_schema, raw_subject_state, replace_subjects)
from udfs import landing
from udfs.preprocess import channel_columns

__all__ = ["IngestSummary", "ingest", "main"]


@dataclass
class IngestSummary:
    run_id: str
    decisions: list[FileDecision]
    raw_version: int | None

    def count(self, status: str) -> int:
        return sum(d.status == status for d in self.decisions)

    @property
    def quarantined(self) -> list[FileDecision]:
        return [d for d in self.decisions if d.status == "quarantined"]


def _read_footer(spark: SparkSession, info: storage.FileInfo) -> bytes | Exception:
    """A named file's footer and 8-byte tail (what ingest_plan.inspect_file reads), or the error."""
    try:
        tail = storage.read_range(spark, info.path, -8, 8) if info.size >= 8 else b""
        length = footer_length(tail, info.size)
        return storage.read_range(spark, info.path, -8 - length, length) + tail
    except Exception as exc:  # noqa: BLE001 - reported as an unreadable file, with the reason
        return exc


# ---- the data checks and the write --------------------------------------------------------------

def _binary_files(spark: SparkSession, todo: list[FileDecision]) -> DataFrame:
    """One row per file (Spark's binaryFile source, through Hadoop's FileSystem), with the file's
    bytes only when a file is not on the local file system: without ``content`` Spark never
    reads the file, and the executors open it by its ``local_path`` (udfs.landing.sources)."""
    local = all(d.info.local_path for d in todo)
    return (spark.read.format("binaryFile").load([d.info.path for d in todo])
            .select("path", *([] if local else ["content"])))


# one file per Arrow batch and per task: a file is one large cell, and files spread over the cores
_FILE_JOB_CONF = {"spark.sql.execution.arrow.maxRecordsPerBatch": "1",
                  "spark.sql.files.maxPartitionBytes": str(1 << 20), "spark.sql.files.openCostInBytes": str(1 << 20)}

_CHECK_SCHEMA = T.StructType([
    T.StructField("name", T.StringType(), False),
    T.StructField("rows", T.LongType(), True),
    T.StructField("bad", T.StringType(), True),
    T.StructField("events", T.LongType(), True),
    T.StructField("bad_stim", T.LongType(), True),
    T.StructField("error", T.StringType(), True),
])


def _data_checks(spark: SparkSession, cfg: Config, todo: list[FileDecision], rep: Reporter) -> None:
    """One Spark job over all files to write: rejects NaN/inf channels, no events, odd stim codes,
    and data that does not decode although the footer did (corrupt pages)."""
    sig = cfg.signal
    ids = (sig.event_ids.nontarget, sig.event_ids.target)
    specs = {d.info.name: {"channels": d.channels, "stim_float": d.stim_float, "local_path": d.info.local_path}
             for d in todo}
    stim = sig.stim_column

    def check(batches):
        return landing.check_files(batches, specs, stim, ids)

    with storage.session_conf(spark, _FILE_JOB_CONF), job_progress(spark, rep, "data checks", "files", len(todo)):
        results = {r.name: r for r in _binary_files(spark, todo).mapInPandas(check, _CHECK_SCHEMA).collect()}
    for d in todo:
        r = results.get(d.info.name)
        if r is None:
            d.reject("unreadable", "the file could not be read back from the landing zone")
            continue
        if r.error is not None:
            d.reject("unreadable", f"the data cannot be read: {r.error}")
            continue
        d.rows = int(r.rows)
        bad = json.loads(r.bad)
        if bad:
            detail = ", ".join(f"{c}: {n} of {d.rows}" for c, n in list(bad.items())[:5])
            d.reject("nan_channels", f"NaN/inf samples in {len(bad)} channel(s): {detail}")
        elif r.bad_stim:
            d.reject("bad_stim", f"{r.bad_stim} {stim} values are missing or not whole numbers")
        elif not r.events:
            d.reject("no_events", f"no events: {stim} never takes the values {ids[0]} (NonTarget) "
                                  f"or {ids[1]} (Target)")


def _raw_frame(spark: SparkSession, cfg: Config, todo: list[FileDecision], width: int) -> DataFrame:
    """The files to write as chunk rows, channels 1..width (null where a file has fewer)."""
    sig = cfg.signal
    all_chans = [f"{sig.channel_prefix}{i}" for i in range(1, width + 1)]
    specs = {d.info.name: {"subject_id": d.subject_id, "channels": d.channels, "ingest_id": d.ingest_id,
                           "sfreq": d.sfreq, "local_path": d.info.local_path} for d in todo}
    chunk, stim = cfg.storage.raw_chunk_samples, sig.stim_column

    def encode(batches):
        return landing.encode_files(batches, specs, all_chans, stim, chunk)

    return _binary_files(spark, todo).mapInPandas(encode, raw_schema(all_chans, stim))


def _write_raw(spark: SparkSession, cfg: Config, todo: list[FileDecision], run_id: str, rep: Reporter) -> int:
    """ONE commit for the whole batch; replaceWhere makes a retried write a replacement."""
    width = max(max(len(d.channels) for d in todo), len(raw_channels(spark, cfg)))
    df = _raw_frame(spark, cfg, todo, width)
    meta = {"op": "p300 ingest", "run_id": run_id, "files": {d.info.name: d.ingest_id for d in todo}}
    # no Parquet dictionary for the sample blocks (all distinct: it would cost CPU and be dropped anyway)
    conf = {**_FILE_JOB_CONF, **{f"parquet.enable.dictionary#{c}": "false"
                                 for c in [*channel_columns(df.columns, cfg.signal.channel_prefix), cfg.signal.stim_column]}}
    with job_progress(spark, rep, "raw_eeg write", "files", len(todo)):
        replace_subjects(cfg, df, RAW_EEG, [d.subject_id for d in todo], properties=RAW_TABLE_PROPERTIES,
                         metadata=meta, merge_schema=True, conf=conf)
    return int(storage.table_version(spark, cfg, RAW_EEG))


def _append_log(spark: SparkSession, cfg: Config, decisions: Iterable[FileDecision], run_id: str,
                when: datetime) -> None:
    rows = [d.log_row(run_id, when) for d in decisions]
    if rows:
        append_rows(cfg, spark.createDataFrame(rows, INGEST_LOG_SCHEMA), INGEST_LOG)


# ---- the run ------------------------------------------------------------------------------------

def ingest(spark: SparkSession, cfg: Config, max_subjects: int | None = None, replace: bool = False,
           rep: Reporter | None = None) -> IngestSummary:
    """Run one ingest; returns what happened to every file (exceptions mean the job could not run)."""
    rep = rep or Reporter(quiet=True)
    run_id = uuid.uuid4().hex[:12]
    when = datetime.now(timezone.utc).replace(tzinfo=None)
    if max_subjects is not None and max_subjects < 1:
        raise ValueError("--max-subjects must be at least 1")
    entries = [e for e in storage.list_files(spark, cfg.landing_dir) if is_input(e)]
    if not entries:
        rep.info(f"landing zone {cfg.landing_dir} is empty")
        return IngestSummary(run_id, [], storage.table_version(spark, cfg, RAW_EEG))
    rep.info(f"{len(entries)} file(s) in {cfg.landing_dir}")
    footers = {e.name: _read_footer(spark, e) for e in entries if not e.is_dir and parse_subject_id(e.name) is not None}
    log = log_rows(spark, cfg, INGEST_LOG, ("file", "subject_id", "status", "ingest_id", "moved_to", "time"))
    exists = lambda path: storage.path_exists(spark, path)  # noqa: E731
    plan = plan_files(cfg, entries, footers, log, raw_subject_state(spark, cfg), replace=replace,
                      max_subjects=max_subjects, exists=exists)
    if plan.deferred:
        rep.info(f"--max-subjects {max_subjects}: {len(plan.deferred)} file(s) left for later runs")

    todo = plan.to_write
    if todo:
        _data_checks(spark, cfg, todo, rep)
        todo = [d for d in todo if d.write]
    raw_version = storage.table_version(spark, cfg, RAW_EEG)
    if todo:
        rows = sum(d.rows or 0 for d in todo)
        with rep.stage(f"writing {len(todo)} subject(s), {rows:,} samples, to raw_eeg"):
            raw_version = _write_raw(spark, cfg, todo, run_id, rep)
        kill_point(cfg, "ingest.after_raw_commit")
    for d in plan.batch:
        if d.status in OK_STATUSES:
            d.raw_version = raw_version
    decisions = plan.early + plan.batch

    dests = Destinations(exists)
    for d in decisions:
        if d.status in OK_STATUSES:
            d.dest = dests.pick(cfg.archive_dir, d.info.name, d.ingest_id)
        elif d.status == "quarantined":
            d.dest = dests.pick(cfg.quarantine_dir, d.info.name, d.ingest_id)
    _append_log(spark, cfg, [d for d in decisions if d.status in OK_STATUSES + ("quarantined",)], run_id, when)
    kill_point(cfg, "ingest.after_log")
    for d in decisions:
        if d.dest:
            storage.move_file(spark, d.info.path, d.dest)
            kill_point(cfg, "ingest.after_first_move")
            _progress(rep, d)
    return IngestSummary(run_id, decisions + plan.deferred, raw_version)


def _progress(rep: Reporter, d: FileDecision) -> None:
    if d.status in OK_STATUSES:
        extra = f" ({d.reason})" if d.reason else ""
        rep.info(f"  {d.info.name}: {d.status}, subject {d.subject_id}, {d.rows:,} samples x {len(d.channels)} ch "
                 f"at {d.sfreq:g} Hz{extra}")
    elif d.status == "quarantined":
        rep.warn(f"{d.info.name}: quarantined ({d.kind}): {d.reason}")
    elif d.status == "finish_move":
        rep.info(f"  {d.info.name}: moved to {d.dest} (completing an interrupted run)")


def main(cfg: Config, args: Any, rep: Reporter) -> int:
    """`p300 ingest [--max-subjects N] [--replace]`."""
    from pipeline.spark import get_spark

    max_subjects = getattr(args, "max_subjects", None)
    if max_subjects is not None and max_subjects < 1:
        rep.warn(f"--max-subjects must be at least 1, got {max_subjects}")
        return 2
    try:
        spark = get_spark(cfg)
        with root_lock(cfg, "ingest", rep):  # one ingest per root at a time (pipeline/locks.py)
            summary = ingest(spark, cfg, max_subjects=max_subjects,
                             replace=bool(getattr(args, "replace", False)), rep=rep)
    except Exception as exc:  # the job itself could not run: nothing half-done is left behind
        rep.warn(f"ingest failed: {explain(exc, cfg) or f'{type(exc).__name__}: {exc}'}")
        return 1
    bad = summary.quarantined
    if bad:
        rep.table([(d.info.name, d.kind, d.reason, d.dest) for d in bad], ["file", "kind", "reason", "moved to"],
                  title=f"rejected {len(bad)} file(s):")
    rep.result(f"ingest: {summary.count('ingested')} ingested, {summary.count('replaced')} replaced, "
               f"{len(bad)} quarantined, {summary.count('finish_move')} interrupted moves completed, "
               f"{summary.count('deferred')} left for later runs; raw_eeg version {summary.raw_version}")
    return 0
