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

import hashlib
import io
import json
import re
import struct
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline import storage
from pipeline.config import Config
from pipeline.faults import kill_point
from pipeline.job_progress import job_progress
from pipeline.locks import root_lock
from pipeline.storage_errors import explain
from pipeline.report import Reporter
from udfs import landing, raw_chunks
from udfs.preprocess import channel_columns

__all__ = ["INGEST_LOG_SCHEMA", "IngestSummary", "FileDecision", "ingest", "main", "parse_subject_id",
           "raw_subject_state", "raw_schema", "raw_samples", "RAW_TABLE_PROPERTIES"]

NAME_RE = re.compile(r"^subject_(\d{2,})_eeg_stim\.parquet$")

INGEST_LOG_SCHEMA = T.StructType([
    T.StructField("file", T.StringType(), False),
    T.StructField("subject_id", T.IntegerType(), True),
    T.StructField("status", T.StringType(), False),       # ingested | replaced | quarantined
    T.StructField("kind", T.StringType(), True),          # why quarantined (bad_name, nan_channels, ...) or "recovered"
    T.StructField("reason", T.StringType(), True),
    T.StructField("rows", T.LongType(), True),
    T.StructField("n_channels", T.IntegerType(), True),
    T.StructField("sfreq", T.DoubleType(), True),
    T.StructField("bytes", T.LongType(), True),
    T.StructField("ingest_id", T.StringType(), False),
    T.StructField("moved_to", T.StringType(), True),
    T.StructField("raw_version", T.LongType(), True),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("time", T.TimestampType(), False),
])

# Statistics only where a query filters: sample_idx (the per-subject "row 0" lookups);
# min/max over every EEG channel would cost write time and never skip a file.
RAW_TABLE_PROPERTIES = {"delta.dataSkippingStatsColumns": "sample_idx"}
OK_STATUSES = ("ingested", "replaced")
# Spark's binaryFile source holds a file in one byte array: Java arrays stop just short of 2 GiB
MAX_FILE_BYTES = (1 << 31) - (1 << 20)


@dataclass
class FileDecision:
    """What happens to one landing-zone file; becomes its ingest_log row."""

    info: storage.FileInfo
    ingest_id: str
    subject_id: int | None = None
    status: str = "pending"   # ingested | replaced | quarantined | finish_move | deferred
    kind: str | None = None
    reason: str | None = None
    rows: int | None = None
    channels: list[str] = field(default_factory=list)
    stim_float: bool = False
    sfreq: float | None = None
    dest: str | None = None
    write: bool = False       # goes into this run's raw_eeg commit
    raw_version: int | None = None

    def reject(self, kind: str, reason: str) -> "FileDecision":
        self.status, self.kind, self.reason, self.write = "quarantined", kind, reason, False
        return self

    def log_row(self, run_id: str, when: datetime) -> tuple:
        return (self.info.name, self.subject_id, self.status, self.kind, self.reason, self.rows,
                len(self.channels) or None, self.sfreq, self.info.size, self.ingest_id, self.dest,
                self.raw_version, run_id, when)


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


def parse_subject_id(name: str) -> int | None:
    m = NAME_RE.match(name)
    return int(m.group(1)) if m else None


def _skipped(name: str) -> bool:
    """Hidden, temporary or checksum files (e.g. a file still being written) are not input."""
    return name.startswith((".", "_")) or name.endswith((".tmp", ".crc", ".inprogress"))


# ---- footer inspection -------------------------------------------------------------------------

def _read_footer(spark: SparkSession, info: storage.FileInfo) -> tuple[pq.FileMetaData, bytes]:
    if info.size < 12:
        raise ValueError(f"{info.size} bytes is too small for a Parquet file")
    tail = storage.read_range(spark, info.path, -8, 8)
    if tail[4:] != b"PAR1":
        raise ValueError("not a Parquet file (no PAR1 magic at the end)")
    length = struct.unpack("<I", tail[:4])[0]
    if length + 12 > info.size:
        raise ValueError(f"footer length {length} exceeds the file size {info.size}")
    footer = storage.read_range(spark, info.path, -8 - length, length)
    return pq.read_metadata(io.BytesIO(b"PAR1" + footer + tail)), footer


def _inspect(spark: SparkSession, cfg: Config, info: storage.FileInfo, sid: int) -> FileDecision:
    """Footer-level checks of the raw input contract; the data checks come later, in Spark."""
    try:
        meta, footer = _read_footer(spark, info)
        schema = meta.schema.to_arrow_schema()
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is unreadable
        d = FileDecision(info, _fallback_id(info), sid)
        return d.reject("unreadable", f"unreadable Parquet file: {exc}")
    d = FileDecision(info, hashlib.sha256(f"{sid}|{info.size}|".encode() + footer).hexdigest()[:24], sid)
    d.rows = int(meta.num_rows)
    sig = cfg.signal
    names = list(schema.names)
    chans = channel_columns(names, sig.channel_prefix)
    if d.rows == 0:
        return d.reject("empty", "the file has no rows")
    if info.local_path is None and info.size > MAX_FILE_BYTES:
        return d.reject("too_large", f"{info.size:,} bytes: ingest reads a file that is not on the local file "
                                     f"system as one binary cell of at most {MAX_FILE_BYTES:,} bytes (Java's array "
                                     "limit); float32 channels and Parquet compression make it smaller")
    if sig.stim_column not in names:
        return d.reject("no_stim", f"no {sig.stim_column!r} column (columns: {', '.join(names[:8])})")
    if not chans:
        return d.reject("no_channels", f"no {sig.channel_prefix}* columns (columns: {', '.join(names[:8])})")
    expected = [f"{sig.channel_prefix}{i}" for i in range(1, len(chans) + 1)]
    if chans != expected:
        missing = sorted(set(expected) - set(chans), key=lambda c: int(c[len(sig.channel_prefix):]))
        return d.reject("bad_channels", f"channels must be {expected[0]}..{expected[-1]} without gaps; "
                                        f"missing {', '.join(missing[:5])}")
    if len(set(names)) != len(names):
        return d.reject("bad_channels", "duplicate column names")
    non_numeric = [f"{c} ({schema.field(c).type})" for c in chans
                   if not (pa.types.is_floating(schema.field(c).type) or pa.types.is_integer(schema.field(c).type))]
    if non_numeric:
        return d.reject("non_numeric", f"non-numeric channels: {', '.join(non_numeric[:5])}")
    stim_type = schema.field(sig.stim_column).type
    if not (pa.types.is_integer(stim_type) or pa.types.is_floating(stim_type)):
        return d.reject("bad_stim", f"{sig.stim_column} must be integer event codes, got {stim_type}")
    d.stim_float = pa.types.is_floating(stim_type)
    d.channels = chans
    raw_meta = (meta.metadata or {}).get(b"sfreq")
    if raw_meta is None:
        d.sfreq = float(sig.sfreq)
    else:
        try:
            d.sfreq = float(raw_meta.decode())
        except (ValueError, UnicodeDecodeError):
            return d.reject("bad_sfreq", f"Parquet metadata sfreq={raw_meta!r} is not a number")
    if not d.sfreq > 2 * cfg.preprocess.h_freq:
        return d.reject("bad_sfreq", f"sampling rate {d.sfreq:g} Hz is too low for the {cfg.preprocess.h_freq:g} Hz "
                                     f"low-pass (needs more than {2 * cfg.preprocess.h_freq:g} Hz)")
    extra = [n for n in names if n not in chans and n != sig.stim_column]
    if extra:
        d.reason = f"ignored columns: {', '.join(extra[:8])}"
    return d


def _fallback_id(info: storage.FileInfo) -> str:
    return hashlib.sha256(f"{info.name}|{info.size}|{info.mtime_ms}".encode()).hexdigest()[:24]


# ---- state already in the lakehouse ---------------------------------------------------------------

def raw_subject_state(spark: SparkSession, cfg: Config, version: int | None = None) -> dict[int, tuple[str, float]]:
    """subject_id -> (ingest_id, sfreq) of the data raw_eeg holds; reads one row per subject.

    Every file's rows carry its ingest id and rate, so sample 0 identifies a subject's
    data; statistics on sample_idx let Delta and Parquet skip everything else."""
    if not storage.table_exists(spark, cfg, "raw_eeg"):
        return {}
    rows = (storage.read_table(spark, cfg, "raw_eeg", version).where(F.col("sample_idx") == 0)
            .select("subject_id", "ingest_id", "sfreq").collect())
    return {int(r.subject_id): (r.ingest_id, float(r.sfreq)) for r in rows}


def _log_state(spark: SparkSession, cfg: Config) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(ingest_id -> its latest ingest_log row, every ingested/replaced row), oldest first."""
    if not storage.table_exists(spark, cfg, "ingest_log"):
        return {}, []
    rows = (storage.read_table(spark, cfg, "ingest_log")
            .select("file", "subject_id", "status", "ingest_id", "moved_to", "time").collect())
    latest: dict[str, dict[str, Any]] = {}
    ok = []
    for r in sorted(rows, key=lambda r: r.time):
        latest[r.ingest_id] = r.asDict()
        if r.status in OK_STATUSES:
            ok.append(r.asDict())
    return latest, ok


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


def raw_schema(channels: list[str], stim_column: str) -> T.StructType:
    """raw_eeg's chunk rows (udfs.raw_chunks): samples as little-endian byte strings per channel."""
    return T.StructType([
        T.StructField("subject_id", T.IntegerType(), False),
        T.StructField("sample_idx", T.LongType(), False),
        T.StructField("n_samples", T.IntegerType(), False),
        *[T.StructField(c, T.BinaryType(), True) for c in channels],
        T.StructField(stim_column, T.BinaryType(), False),
        T.StructField("ingest_id", T.StringType(), False),
        T.StructField("sfreq", T.DoubleType(), False),
    ])


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


def raw_samples(spark: SparkSession, cfg: Config, subjects: Iterable[int] | None = None,
                version: int | None = None) -> DataFrame:
    """raw_eeg as one row per sample (subject_id, sample_idx, eeg_ch1..N float, stim int), for people.

    Each chunk row expands on its own (no shuffle); ``subjects`` prunes partitions before
    anything is expanded (a filter on the result would expand every subject first)."""
    raw = storage.read_table(spark, cfg, "raw_eeg", version)
    if subjects is not None:
        raw = raw.where(F.col("subject_id").isin([int(s) for s in subjects]))
    sig = cfg.signal
    chans = channel_columns(raw.columns, sig.channel_prefix)
    schema = T.StructType([
        T.StructField("subject_id", T.IntegerType(), False),
        T.StructField("sample_idx", T.LongType(), False),
        *[T.StructField(c, T.FloatType(), True) for c in chans],
        T.StructField(sig.stim_column, T.IntegerType(), False),
    ])

    def expand(batches):
        for pdf in batches:
            for i in range(len(pdf)):  # chunk by chunk: a batch of chunk rows can hold hours of samples
                yield raw_chunks.samples(pdf.iloc[i:i + 1], chans, sig.stim_column)

    return raw.mapInPandas(expand, schema)


def _check_layout(spark: SparkSession, cfg: Config) -> list[str]:
    """The channels of an existing raw_eeg; refuses the per-sample layout of earlier versions."""
    if not storage.table_exists(spark, cfg, "raw_eeg"):
        return []
    raw = storage.read_table(spark, cfg, "raw_eeg")
    if not raw_chunks.is_chunked(raw):
        raise RuntimeError(f"{cfg.table('raw_eeg')} has the old one-row-per-sample layout; this version stores "
                           "chunk rows (see README, 'raw_eeg layout'): move that table aside and ingest the "
                           "archived files again")
    return channel_columns(raw.columns, cfg.signal.channel_prefix)


def _write_raw(spark: SparkSession, cfg: Config, todo: list[FileDecision], run_id: str, rep: Reporter) -> int:
    """ONE commit for the whole batch; replaceWhere makes a retried write a replacement."""
    width = max(len(d.channels) for d in todo)
    width = max(width, len(_check_layout(spark, cfg)))
    df = _raw_frame(spark, cfg, todo, width)
    storage.create_table(spark, cfg, "raw_eeg", df.schema, ["subject_id"], RAW_TABLE_PROPERTIES)
    subjects = sorted({d.subject_id for d in todo})
    meta = {"op": "p300 ingest", "run_id": run_id, "files": {d.info.name: d.ingest_id for d in todo}}
    writer = (df.write.format("delta").mode("overwrite")
              .option("replaceWhere", f"subject_id IN ({', '.join(map(str, subjects))})")
              .option("mergeSchema", "true")
              .option("userMetadata", json.dumps(meta)))
    # no Parquet dictionary for the sample blocks (all distinct: it would cost CPU and be dropped anyway)
    conf = {**_FILE_JOB_CONF, **{f"parquet.enable.dictionary#{c}": "false"
                                 for c in [*channel_columns(df.columns, cfg.signal.channel_prefix), cfg.signal.stim_column]}}
    with storage.session_conf(spark, conf), job_progress(spark, rep, "raw_eeg write", "files", len(todo)):
        storage.save(writer, cfg, "raw_eeg")
    return int(storage.table_version(spark, cfg, "raw_eeg"))


def _append_log(spark: SparkSession, cfg: Config, decisions: Iterable[FileDecision], run_id: str,
                when: datetime) -> None:
    rows = [d.log_row(run_id, when) for d in decisions]
    if not rows:
        return
    storage.create_table(spark, cfg, "ingest_log", INGEST_LOG_SCHEMA)
    df = spark.createDataFrame(rows, INGEST_LOG_SCHEMA)
    storage.save(df.write.format("delta").mode("append"), cfg, "ingest_log")


# ---- the run ------------------------------------------------------------------------------------

class _Destinations:
    """Free names under archive/ and quarantine/, never overwriting an earlier file."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self.taken: set[str] = set()

    def pick(self, directory: str, name: str, ingest_id: str) -> str:
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        candidates = [f"{directory}/{name}", f"{directory}/{stem}.{ingest_id[:12]}{dot}{ext}"]
        candidates += [f"{directory}/{stem}.{ingest_id[:12]}-{k}{dot}{ext}" for k in range(1, 1000)]
        for path in candidates:
            if path not in self.taken and not storage.path_exists(self.spark, path):
                self.taken.add(path)
                return path
        raise RuntimeError(f"no free name for {name} under {directory}")


def ingest(spark: SparkSession, cfg: Config, max_subjects: int | None = None, replace: bool = False,
           rep: Reporter | None = None) -> IngestSummary:
    """Run one ingest; returns what happened to every file (exceptions mean the job could not run)."""
    rep = rep or Reporter(quiet=True)
    run_id = uuid.uuid4().hex[:12]
    when = datetime.now(timezone.utc).replace(tzinfo=None)
    if max_subjects is not None and max_subjects < 1:
        raise ValueError("--max-subjects must be at least 1")
    entries = storage.list_files(spark, cfg.landing_dir)
    entries = [e for e in entries if not _skipped(e.name)]
    if not entries:
        rep.info(f"landing zone {cfg.landing_dir} is empty")
        return IngestSummary(run_id, [], storage.table_version(spark, cfg, "raw_eeg"))
    rep.info(f"{len(entries)} file(s) in {cfg.landing_dir}")
    raw_state = raw_subject_state(spark, cfg)
    log_state, ok_rows = _log_state(spark, cfg)
    dests = _Destinations(spark)
    decisions: list[FileDecision] = []

    # files whose log row exists but whose move did not happen (an interrupted run)
    named: list[FileDecision] = []
    for e in entries:
        sid = parse_subject_id(e.name)
        d = (_inspect(spark, cfg, e, sid) if sid is not None and not e.is_dir
             else FileDecision(e, _fallback_id(e), sid))
        logged = log_state.get(d.ingest_id)
        if logged and logged["moved_to"] and logged["file"] == e.name \
                and not storage.path_exists(spark, logged["moved_to"]):
            d.status, d.dest, d.kind = "finish_move", logged["moved_to"], logged["status"]
            decisions.append(d)
        elif e.is_dir:
            decisions.append(d.reject("unreadable", "a directory, not a Parquet file"))
        elif sid is None:
            decisions.append(d.reject("bad_name", "file name must look like subject_XX_eeg_stim.parquet "
                                                  "(XX: the subject number, two or more digits)"))
        else:
            named.append(d)

    named.sort(key=lambda d: (d.subject_id, d.info.name))
    if max_subjects is not None and len(named) > max_subjects:
        for d in named[max_subjects:]:
            d.status = "deferred"
        rep.info(f"--max-subjects {max_subjects}: {len(named) - max_subjects} file(s) left for later runs")
    batch = [d for d in named if d.status != "deferred"]

    seen: dict[int, str] = {}
    ok_by_subject, ok_ids = {}, {}
    for row in ok_rows:
        ok_by_subject[row["subject_id"]] = row
        ok_ids[row["ingest_id"]] = row
    for d in batch:
        if d.status == "quarantined":
            continue
        sid = d.subject_id
        if sid in seen:
            d.reject("duplicate", f"subject {sid} delivered twice in this batch (also {seen[sid]})")
            continue
        seen[sid] = d.info.name
        if sid in raw_state:
            raw_id = raw_state[sid][0]
            previous = ok_by_subject.get(sid)
            if raw_id == d.ingest_id:
                if d.ingest_id in ok_ids:
                    d.reject("duplicate", f"identical to {ok_ids[d.ingest_id]['file']} already ingested "
                                          f"for subject {sid}")
                else:  # written by a run that stopped before logging it
                    d.status = "replaced" if previous and previous["ingest_id"] != raw_id else "ingested"
                    d.kind, d.reason = "recovered", "raw data already written by an interrupted run"
            elif replace:
                d.status, d.write = "replaced", True
            else:
                since = f" from {previous['file']}" if previous else ""
                d.reject("duplicate", f"subject {sid} was already ingested{since}; "
                                      f"use --replace to replace its raw data")
        else:
            d.status, d.write = "ingested", True

    todo = [d for d in batch if d.write]
    if todo:
        _data_checks(spark, cfg, todo, rep)
        todo = [d for d in todo if d.write]
    raw_version = storage.table_version(spark, cfg, "raw_eeg")
    if todo:
        rows = sum(d.rows or 0 for d in todo)
        with rep.stage(f"writing {len(todo)} subject(s), {rows:,} samples, to raw_eeg"):
            raw_version = _write_raw(spark, cfg, todo, run_id, rep)
        kill_point(cfg, "ingest.after_raw_commit")
    for d in batch:
        if d.status in OK_STATUSES:
            d.raw_version = raw_version
    decisions.extend(batch)

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
    decisions.extend(d for d in named if d.status == "deferred")
    return IngestSummary(run_id, decisions, raw_version)


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
