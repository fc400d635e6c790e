"""`p300 preprocess`: subjects in raw_eeg -> the features table, one applyInPandas over all of them.

Pending subjects are those whose current raw data (identified by the ingest id every
raw_eeg row carries) has no preprocess_log entry yet: new subjects, and subjects whose
raw data was replaced since. ``--reprocess`` recomputes the given subjects (all when
none are given) regardless. The whole batch is ONE Spark job:

    raw_eeg @ version v  (pending subjects only, partition-pruned; chunk rows, udfs/raw_chunks.py)
      -> groupBy(subject_id).applyInPandas(udfs.preprocess.run_subject)
         (its shuffle has n partitions, n chosen so that no two subjects share one; AQE
         then drops the empty ones, so there is one task per subject and no empty task)
      -> features: overwrite replaceWhere subject_id IN (pending)   (ONE atomic commit)

Each subject's status (ok / empty / failed, with the reason and counts) comes back to
the driver as an observed metric of the same job (a status row per subject that the
write filters out; classic and Spark Connect sessions alike), so a failing subject never
fails the job and the others' features are still written; then one preprocess_log commit records every
subject with the raw table version ``v`` and the features version it produced. A crash
before that log commit only means the next run recomputes those subjects, and the
replaceWhere overwrite replaces their rows instead of duplicating them.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline import storage
from pipeline.config import Config
from pipeline.faults import kill_point
from pipeline.job_progress import job_progress
from pipeline.locks import root_lock
from pipeline.storage_errors import explain
from pipeline.report import Reporter
from pipeline.tables import (FEATURES, FEATURES_SCHEMA, FEATURES_TABLE_PROPERTIES, PREPROCESS_LOG, PREPROCESS_LOG_SCHEMA,
                             RAW_EEG, append_rows, latest_per_key, log_rows, raw_subject_state, replace_subjects)
from udfs import raw_chunks
from udfs.preprocess import PreprocessError, Settings, channel_columns, empty_features, run_subject

__all__ = ["PreprocessSummary", "preprocess", "pending_subjects", "spark_partition_hash", "balanced_partitions", "shuffle_conf", "main"]

# Per-job settings. Parquet's dictionary encoding of the float features was a tenth of the
# job's CPU in a profile (hashing ~1M distinct floats per subject, then falling back to
# plain encoding anyway); session confs reach the Parquet writer's Hadoop configuration.
JOB_CONF = {"parquet.enable.dictionary": "false"}


# Each subject's task emits one status row besides its epochs (epoch_idx -1, its status as JSON
# in _STATUS): an observed metric collects those rows from the same job (DataFrame.observe,
# which Spark Connect carries too, unlike an accumulator), and they never reach the table.
_STATUS = "_p300_status"
_OUTPUT_SCHEMA = T.StructType([*FEATURES_SCHEMA.fields, T.StructField(_STATUS, T.StringType(), True)])


@dataclass
class PreprocessSummary:
    run_id: str
    raw_version: int | None
    features_version: int | None
    log: list[dict[str, Any]]
    up_to_date: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: plan, job, log

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.log)


# ---- which subjects, and how to spread them over tasks ------------------------------------------

def _latest_log(spark: SparkSession, cfg: Config) -> dict[int, dict[str, Any]]:
    rows = log_rows(spark, cfg, PREPROCESS_LOG, ("subject_id", "ingest_id", "status", "time"))
    return {int(k): v for k, v in latest_per_key(rows, "subject_id").items()}


def pending_subjects(current: dict[int, tuple[str, float]], done: dict[int, dict[str, Any]],
                     subjects: Sequence[int] | None = None, reprocess: bool = False) -> list[int]:
    """Subjects whose current raw data has not been preprocessed (or all requested, with reprocess)."""
    chosen = [s for s in current if subjects is None or s in set(subjects)]
    if reprocess:
        return sorted(chosen)
    return sorted(s for s in chosen if s not in done or done[s]["ingest_id"] != current[s][0])


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


def spark_partition_hash(value: int, seed: int = 42) -> int:
    """Spark's Murmur3 hash of an int column (the ``hash()`` SQL function, HashPartitioning)."""
    k1 = (value & 0xFFFFFFFF) * 0xCC9E2D51 & 0xFFFFFFFF
    k1 = _rotl(k1, 15) * 0x1B873593 & 0xFFFFFFFF
    h1 = seed ^ k1
    h1 = (_rotl(h1, 13) * 5 + 0xE6546B64) & 0xFFFFFFFF
    h1 ^= 4
    h1 ^= h1 >> 16
    h1 = h1 * 0x85EBCA6B & 0xFFFFFFFF
    h1 ^= h1 >> 13
    h1 = h1 * 0xC2B2AE35 & 0xFFFFFFFF
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


# the most shuffle partitions the search tries: past this a few subjects share a task
MAX_SHUFFLE_PARTITIONS = 8192


def balanced_partitions(subjects: Sequence[int], limit: int = MAX_SHUFFLE_PARTITIONS) -> int:
    """The smallest shuffle partition count under which no two subjects share a partition.

    One subject per task lets the scheduler keep every core busy until the last subject;
    with plain hash partitioning two subjects often land in one task and run one after
    the other while a core idles. The count can be far above the number of subjects (91
    for 20 subjects, thousands for 100): the empty partitions cost nothing because
    ``shuffle_conf`` lets AQE coalesce them away. Past ``limit``, the count with the
    fewest shared partitions."""
    hashes = np.array([spark_partition_hash(s) for s in sorted(set(subjects))], dtype=np.int64)
    k = max(len(hashes), 1)
    best, best_distinct = k, 0
    for n in range(k, max(limit, k) + 1):
        distinct = len(np.unique(hashes % n))
        if distinct == len(hashes):
            return n
        if distinct > best_distinct:
            best, best_distinct = n, distinct
    return best


def shuffle_conf(n_partitions: int) -> dict[str, str]:
    """Session settings for the preprocessing job's one shuffle: ``n_partitions`` hash
    partitions, after which AQE merges every empty partition into a neighbour but never two
    non-empty ones (1-byte targets), leaving one task per subject.

    An explicit ``repartition(n)`` instead kept every empty partition as a task: 71 empty
    tasks at 20 subjects, each about 28 ms, ran before the first subject (1 s on 2 cores)."""
    return {"spark.sql.shuffle.partitions": str(n_partitions),
            "spark.sql.adaptive.enabled": "true",
            "spark.sql.adaptive.coalescePartitions.enabled": "true",
            "spark.sql.adaptive.advisoryPartitionSizeInBytes": "1",
            "spark.sql.adaptive.coalescePartitions.minPartitionSize": "1"}


# ---- the job ------------------------------------------------------------------------------------

def _as_python_lists(features: pd.DataFrame) -> pd.DataFrame:
    """``features`` as lists of Python floats, the cheapest input to PySpark's pandas -> Arrow step.

    PySpark (4.2) turns every value of an array column into a list before Arrow sees it;
    for a float32 ndarray that makes one numpy scalar per float, and the conversion of a
    subject's rows took 80 ms alone (111 ms with both cores busy: 40% of the Python
    workers' time in the job) against 57 ms for ``tolist`` plus the conversion."""
    if features.empty:
        return features
    return features.assign(features=[row.tolist() for row in features["features"]])


def _status_row(status: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"subject_id": [status["subject_id"]], "epoch_idx": [-1], "event_sample": [0], "label": [0],
                         "features": [[]], _STATUS: [json.dumps(status)]})


def _subject_function(base: Settings, info: dict[int, tuple[str, float]]):
    """The function applyInPandas runs per subject: never raises; its epochs, then its status row."""
    def apply(raw: pd.DataFrame) -> pd.DataFrame:
        sid = int(raw["subject_id"].iloc[0])
        ingest_id, sfreq = info[sid]
        t0 = time.perf_counter()
        status: dict[str, Any] = {"subject_id": sid, "ingest_id": ingest_id, "sfreq": sfreq,
                                  "n_samples": raw_chunks.sample_count(raw), "n_epochs": 0}
        out = empty_features()
        try:
            res = run_subject(raw, base.with_sfreq(sfreq))
            out = _as_python_lists(res.features)
            status.update(status="ok", reason=None, n_channels=res.n_channels, n_events=res.n_events,
                          n_out_of_bounds=res.n_out_of_bounds, n_rejected=res.n_rejected, n_epochs=res.n_epochs)
        except PreprocessError as exc:
            status.update(status=exc.status, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - isolate the subject, keep the job going
            status.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        status["seconds"] = time.perf_counter() - t0
        return pd.concat([out.assign(**{_STATUS: None}), _status_row(status)], ignore_index=True)
    return apply


def preprocess(spark: SparkSession, cfg: Config, subjects: Sequence[int] | None = None, reprocess: bool = False,
               rep: Reporter | None = None) -> PreprocessSummary:
    """Preprocess the pending subjects in one applyInPandas and one features commit."""
    rep = rep or Reporter(quiet=True)
    run_id = uuid.uuid4().hex[:12]
    t0 = time.perf_counter()
    raw_version = storage.table_version(spark, cfg, RAW_EEG)
    if raw_version is None:
        rep.info("raw_eeg does not exist yet: run `p300 ingest` first")
        return PreprocessSummary(run_id, None, storage.table_version(spark, cfg, FEATURES), [])
    current = raw_subject_state(spark, cfg, raw_version)
    if subjects is not None:
        unknown = sorted(set(subjects) - set(current))
        if unknown:
            rep.warn(f"not in raw_eeg, skipped: subjects {', '.join(map(str, unknown))}")
    done = _latest_log(spark, cfg)
    pending = pending_subjects(current, done, subjects, reprocess)
    if not pending:
        rep.info(f"nothing to preprocess: {len(current)} subject(s) in raw_eeg v{raw_version} are up to date")
        return PreprocessSummary(run_id, raw_version, storage.table_version(spark, cfg, FEATURES), [],
                                 up_to_date=len(current))
    info = {s: current[s] for s in pending}
    rep.info(f"preprocessing {len(pending)} subject(s) from raw_eeg v{raw_version}: "
             f"{', '.join(map(str, pending[:20]))}{' ...' if len(pending) > 20 else ''}")

    raw = storage.read_table(spark, cfg, RAW_EEG, raw_version)
    chans = channel_columns(raw.columns, cfg.signal.channel_prefix)
    n_parts = balanced_partitions(pending)
    base = Settings.from_config(cfg).with_fir()  # MNE designs the filter here, once: executors get its taps
    chunked = raw_chunks.is_chunked(raw)  # else an old per-sample raw_eeg
    observed = Observation("p300_preprocess_statuses")
    output = (raw.where(F.col("subject_id").isin(pending))
              .select("subject_id", "sample_idx", *(["n_samples"] if chunked else []),
                      *chans, cfg.signal.stim_column)
              .groupBy("subject_id")
              .applyInPandas(_subject_function(base, info), _OUTPUT_SCHEMA)
              .observe(observed, F.collect_list(_STATUS).alias("statuses")))
    features = output.where(F.col(_STATUS).isNull()).drop(_STATUS)
    # bounded batches of chunk rows, from the Parquet reader and to Python (a long recording
    # is one group, but never one batch)
    job_conf = {**JOB_CONF, **shuffle_conf(n_parts)}
    if chunked:  # (a per-sample table keeps Spark's batch sizes)
        rows = str(raw_chunks.rows_per_batch(cfg.storage.raw_chunk_samples, len(chans)))
        job_conf.update({"spark.sql.parquet.columnarReaderBatchSize": rows,
                         "spark.sql.execution.arrow.maxRecordsPerBatch": rows})
    meta = {"op": "p300 preprocess", "run_id": run_id, "raw_version": raw_version, "subjects": pending}
    t1 = time.perf_counter()
    with rep.stage(f"applyInPandas over {len(pending)} subject(s) -> features"), \
            job_progress(spark, rep, "preprocess", "subjects", len(pending)):
        replace_subjects(cfg, features, FEATURES, pending, schema=FEATURES_SCHEMA,
                         properties=FEATURES_TABLE_PROPERTIES, metadata=meta, conf=job_conf)
    features_version = storage.table_version(spark, cfg, FEATURES)
    kill_point(cfg, "preprocess.after_features_commit")
    t2 = time.perf_counter()

    reported = {s["subject_id"]: s for s in map(json.loads, observed.get["statuses"])}
    when = datetime.now(timezone.utc).replace(tzinfo=None)
    log = []
    for sid in pending:
        s = reported.get(sid) or {"subject_id": sid, "ingest_id": info[sid][0], "sfreq": info[sid][1],
                                  "status": "failed", "reason": "no status reported by the task", "n_epochs": 0}
        log.append({**{f.name: None for f in PREPROCESS_LOG_SCHEMA}, **s, "raw_version": raw_version,
                    "features_version": features_version, "run_id": run_id, "time": when})
    rows = [tuple(r[f.name] for f in PREPROCESS_LOG_SCHEMA) for r in log]
    append_rows(cfg, spark.createDataFrame(rows, PREPROCESS_LOG_SCHEMA), PREPROCESS_LOG)
    timings = {"plan": t1 - t0, "job": t2 - t1, "log": time.perf_counter() - t2}
    return PreprocessSummary(run_id, raw_version, features_version, log, up_to_date=len(current) - len(pending),
                             timings=timings)


def main(cfg: Config, args: Any, rep: Reporter) -> int:
    """`p300 preprocess [--subjects ..] [--reprocess]`."""
    from pipeline.spark import get_spark

    try:
        spark = get_spark(cfg)
        with root_lock(cfg, "preprocess", rep):  # one preprocess per root at a time (pipeline/locks.py)
            summary = preprocess(spark, cfg, subjects=getattr(args, "subjects", None),
                                 reprocess=bool(getattr(args, "reprocess", False)), rep=rep)
    except Exception as exc:  # the job could not run; Delta left the tables as they were
        rep.warn(f"preprocess failed: {explain(exc, cfg) or f'{type(exc).__name__}: {exc}'}")
        return 1
    if summary.log:
        rep.table([(r["subject_id"], r["status"], r["n_epochs"], r.get("n_rejected"), r.get("n_events"),
                    r["sfreq"], r["reason"] or "") for r in summary.log],
                  ["subject", "status", "epochs", "rejected", "events", "sfreq", "reason"])
    rep.result(f"preprocess: {summary.count('ok')} ok, {summary.count('empty')} empty, "
               f"{summary.count('failed')} failed, {summary.up_to_date} already up to date; "
               f"features version {summary.features_version} from raw_eeg version {summary.raw_version}")
    return 0
