"""`p300 monitor`: profile and drift per window of the inference log, and the retraining rule.

Reads the inference log (the local server's, or the endpoint's Databricks payload table),
picks the windows that have closed (``monitoring.lateness_s`` ago) and are not yet in
``monitor_profile`` with the same request count, and writes their rows to
``monitor_profile`` and ``monitor_drift`` with a MERGE: a rerun over the same windows
writes nothing; a window that received late rows is recomputed and replaced. Then it
applies ``monitoring.rule`` to the served entity's latest windows and records the outcome
in ``monitor_flags`` (and, on Databricks, as the task value ``retrain``), which job
``monitor_and_retrain`` reads. An MLflow run per monitor run that processed windows plots
the metrics over time, one line per served model.
"""
from __future__ import annotations

import argparse
import math
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.config import Config
from pipeline.monitor_baseline import load_baseline
from pipeline.monitor_log import normalized_log, scored_epochs, window_counts
from pipeline.monitor_metrics import Baseline, window_metrics, window_rows
from pipeline.monitor_tables import DRIFT_DDL, FLAGS_DDL, PROFILE_DDL, RETRAIN_FLAG, TABLE_COLUMN, spark_schema
from pipeline.report import Reporter
from pipeline.retrain_rule import RuleOutcome, apply_rule
from pipeline.spark import get_spark
from pipeline.storage import create_table, delta_table, read_table, save, table_exists

__all__ = ["MonitorResult", "monitor", "pending_windows", "main"]

_PROFILE_KEYS = ("window.start", "model_id", "slice_value", "column_name")


class MonitorResult:
    """What one run did: windows processed, the per-window metrics, the rule's outcome."""

    def __init__(self, processed: int, metrics: pd.DataFrame, outcome: RuleOutcome | None, run_id: str | None):
        self.processed, self.metrics, self.outcome, self.run_id = processed, metrics, outcome, run_id


def pending_windows(counts: pd.DataFrame, done: dict[tuple, int], now_ms: int, window_s: int,
                    lateness_s: float) -> pd.DataFrame:
    """Closed windows (end + lateness <= now) that are new, or whose request count changed."""
    if counts.empty:
        return counts
    closed = counts["window_start"] + window_s * 1000 + lateness_s * 1000 <= now_ms
    fresh = [done.get((int(r.window_start), f"{r.model_name}/{r.model_version}", r.served_entity)) != int(r.count)
             for r in counts.itertuples()]
    return counts[closed & pd.Series(fresh, index=counts.index)]


def _done(spark: SparkSession, cfg: Config) -> dict[tuple, int]:
    if not table_exists(spark, cfg, "monitor_profile"):
        return {}
    rows = (read_table(spark, cfg, "monitor_profile").where(F.col("column_name") == TABLE_COLUMN)
            .select(F.unix_millis("window.start").alias("start"), "model_id", "slice_value", "count").collect())
    return {(int(r["start"]), r["model_id"], r["slice_value"]): int(r["count"]) for r in rows}


def _merge(spark: SparkSession, cfg: Config, name: str, ddl: str, rows: list[dict], keys: tuple[str, ...]) -> None:
    if not rows:
        return
    schema = spark_schema(ddl)
    create_table(spark, cfg, name, schema)
    source = spark.createDataFrame([_clean(r, schema.fieldNames()) for r in rows], schema)
    cond = " AND ".join(f"t.{k} <=> s.{k}" for k in keys)
    delta_table(spark, cfg, name).alias("t").merge(source.alias("s"), cond) \
        .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()


def _clean(row: dict, fields: list[str]) -> dict:
    """NaN -> null (Lakehouse Monitoring leaves what cannot be computed null), missing -> null."""
    def fix(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v.item() if hasattr(v, "item") else v
    return {f: fix(row.get(f)) for f in fields}


def _channel_names(n: int) -> list[str]:
    return [f"ch{i + 1}" for i in range(n)]


def _process(spark: SparkSession, cfg: Config, log: Any, pending: pd.DataFrame, run_id: str,
             rep: Reporter) -> None:
    epochs = scored_epochs(spark, cfg, log, sorted({int(s) for s in pending["window_start"]}))
    baselines: dict[str, Baseline | None] = {}
    profile: list[dict] = []
    drift: list[dict] = []
    sampled = epochs["rms"].dropna()
    width = len(sampled.iloc[0]) if len(sampled) else 0
    for req in pending.to_dict("records"):
        version = str(req["model_version"])
        if version not in baselines:
            baselines[version] = load_baseline(spark, cfg, version, rep)
        sel = ((epochs["window_start"] == req["window_start"]) & (epochs["model_version"] == req["model_version"])
               & (epochs["served_entity"] == req["served_entity"]))
        p, d = window_rows(req, req, epochs[sel], baselines[version], cfg.signal.event_ids.target,
                           cfg.monitoring.window_s, cfg.monitoring.psi_bins, run_id, _channel_names(width))
        profile += p
        drift += d
    _merge(spark, cfg, "monitor_profile", PROFILE_DDL, profile, _PROFILE_KEYS)
    _merge(spark, cfg, "monitor_drift", DRIFT_DDL, drift, _PROFILE_KEYS)


def all_metrics(spark: SparkSession, cfg: Config) -> pd.DataFrame:
    """Every window's flat metrics (pipeline.monitor_metrics.METRICS), oldest first."""
    if not table_exists(spark, cfg, "monitor_profile"):
        return window_metrics(pd.DataFrame(), pd.DataFrame())
    profile = read_table(spark, cfg, "monitor_profile").where(F.col("column_name").isin(TABLE_COLUMN, "score"))
    drift = read_table(spark, cfg, "monitor_drift") if table_exists(spark, cfg, "monitor_drift") else None
    return window_metrics(profile.toPandas(), drift.toPandas() if drift is not None else pd.DataFrame())


def _apply_rule(spark: SparkSession, cfg: Config, metrics: pd.DataFrame, run_id: str) -> RuleOutcome | None:
    rule = cfg.monitoring.rule
    mine = metrics[metrics["served_entity"] == rule.served_entity]
    if mine.empty:
        return None
    model_id = mine.iloc[-1]["model_id"]  # the model serving as that entity in the latest window
    series = mine[mine["model_id"] == model_id]
    if rule.metric not in series.columns:
        raise ValueError(f"monitoring.rule.metric {rule.metric!r} is not a monitor metric "
                         f"(one of {', '.join(c for c in metrics.columns if c not in ('window_start', 'model_id', 'served_entity'))})")
    windows = [(str(w), v) for w, v in zip(series["window_start"], series[rule.metric])]
    outcome = apply_rule(windows, rule)
    end = series.iloc[-1]["window_start"] + pd.Timedelta(seconds=cfg.monitoring.window_s)
    row = {"flag": RETRAIN_FLAG, "model_id": model_id, "slice_value": rule.served_entity,
           "window_end": end.to_pydatetime(), "fired": outcome.fired, "metric": rule.metric,
           "threshold": rule.threshold, "k": rule.k, "n": rule.n, "violated": outcome.violated,
           "reason": outcome.reason, "set_at": datetime.now(timezone.utc).replace(tzinfo=None),
           "monitor_run_id": run_id}
    keys = ("flag", "model_id", "slice_value", "window_end", "metric", "threshold", "k", "n")
    if table_exists(spark, cfg, "monitor_flags"):  # the same evaluation again: write nothing
        seen = read_table(spark, cfg, "monitor_flags").where(
            " AND ".join(f"{k} <=> {_sql(row[k])}" for k in keys)).limit(1).count()
        if seen:
            return outcome
    create_table(spark, cfg, "monitor_flags", spark_schema(FLAGS_DDL))
    save(spark.createDataFrame([row], spark_schema(FLAGS_DDL)).write.format("delta").mode("append"), cfg,
         "monitor_flags")
    return outcome


def _sql(value: Any) -> str:
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    return f"'{value}'" if isinstance(value, str) else str(value)


def _task_value(spark: SparkSession, fired: bool) -> None:
    """On a Databricks job cluster: the flag as task value ``retrain`` (the bundle's condition task reads it)."""
    if spark.conf.get("spark.databricks.clusterUsageTags.clusterId", None) is None:
        return
    from databricks.sdk.runtime import dbutils

    dbutils.jobs.taskValues.set(key=RETRAIN_FLAG, value=bool(fired))


def monitor(cfg: Config, rep: Reporter, now_ms: int | None = None) -> MonitorResult:
    spark = get_spark(cfg)
    log = normalized_log(spark, cfg)
    if log is None:
        rep.result(f"monitor: no inference log at {cfg.table('inference_log')} yet: nothing to do")
        return MonitorResult(0, window_metrics(pd.DataFrame(), pd.DataFrame()), None, None)
    counts = window_counts(log)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    pending = pending_windows(counts, _done(spark, cfg), now_ms, cfg.monitoring.window_s, cfg.monitoring.lateness_s)
    open_ = int((counts["window_start"] + (cfg.monitoring.window_s + cfg.monitoring.lateness_s) * 1000 > now_ms).sum())
    rep.info(f"monitor: {len(counts)} window(s) x served model in the log; {len(pending)} to process"
             + (f"; {open_} still open" if open_ else ""))
    run_id = uuid.uuid4().hex
    if len(pending):
        with rep.stage(f"monitor: profiling {len(pending)} window(s), {int(pending['count'].sum())} requests"):
            _process(spark, cfg, log, pending, run_id, rep)
    metrics = all_metrics(spark, cfg)
    outcome = _apply_rule(spark, cfg, metrics, run_id)
    if outcome is not None:
        _task_value(spark, outcome.fired)
    mlflow_run = None
    if len(pending):
        from pipeline.monitor_report import log_run

        mlflow_run = log_run(cfg, metrics, outcome, run_id, len(pending))
    return MonitorResult(len(pending), metrics, outcome, mlflow_run)


def main(cfg: Config, args: argparse.Namespace, rep: Reporter) -> int:
    from pipeline.monitor_report import summary

    result = monitor(cfg, rep)
    summary(cfg, rep, result.metrics, result.outcome, result.processed, result.run_id)
    return 0
