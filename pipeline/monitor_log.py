"""Reading the inference log for the monitor: columns, windows, and scored epochs.

The local log and Databricks' legacy inference tables have the same columns; AI Gateway
payload tables name two of them differently (``request_time``, ``execution_duration_ms``)
and carry no ``request_metadata``, so ``normalized_log`` maps both to one shape. Parsing
the request and response JSON happens once per request in ``mapInPandas`` (orjson, on
the executors), and only for the windows the monitor is about to process.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.config import Config
from pipeline.storage import read_table, table_exists
from udfs.drift import channel_rms, request_matrix, response_scores

__all__ = ["normalized_log", "window_counts", "scored_epochs", "EPOCH_SCHEMA"]

EPOCH_SCHEMA = ("window_start long, model_name string, model_version string, served_entity string, "
                "client_request_id string, subject_id int, epoch_index int, score double, predicted int, "
                "rms array<float>")


def normalized_log(spark: SparkSession, cfg: Config) -> DataFrame | None:
    """The inference log with timestamp_ms, execution_time_ms, status_code, model_name,
    model_version, served_entity and window_start; None when nothing was logged yet."""
    if not table_exists(spark, cfg, "inference_log"):
        return None
    df = read_table(spark, cfg, "inference_log")
    cols = set(df.columns)
    if "timestamp_ms" not in cols and "request_time" in cols:  # AI Gateway payload table
        df = df.withColumn("timestamp_ms", F.unix_millis(F.col("request_time")))
    if "execution_time_ms" not in cols and "execution_duration_ms" in cols:
        df = df.withColumn("execution_time_ms", F.col("execution_duration_ms"))
    meta = "request_metadata" in cols

    def from_meta(key: str, default: Any) -> Any:
        return F.coalesce(F.col("request_metadata")[key], default) if meta else default

    window_ms = cfg.monitoring.window_s * 1000
    return (df.withColumn("model_name", from_meta("model_name", F.lit(cfg.registry.model_name)))
              .withColumn("model_version", from_meta("model_version", F.col("served_entity_id")))
              .withColumn("served_entity", from_meta("served_entity_name", F.col("served_entity_id")))
              .withColumn("window_start", F.floor(F.col("timestamp_ms") / window_ms).cast("long") * window_ms))


def window_counts(log: DataFrame) -> pd.DataFrame:
    """Requests, errors and latency percentiles per window and served model (small)."""
    return (log.groupBy("window_start", "model_name", "model_version", "served_entity")
               .agg(F.count(F.lit(1)).alias("count"),
                    F.sum(F.when(F.col("status_code") != 200, 1).otherwise(0)).alias("errors"),
                    F.percentile("execution_time_ms", 0.5).alias("latency_p50_ms"),
                    F.percentile("execution_time_ms", 0.95).alias("latency_p95_ms"),
                    F.percentile("execution_time_ms", 0.99).alias("latency_p99_ms"))
               .toPandas())


def _epochs_of(batches: Iterator[pd.DataFrame], n_times: int) -> Iterator[pd.DataFrame]:
    cols = ["window_start", "model_name", "model_version", "served_entity", "client_request_id"]
    for batch in batches:
        out: list[pd.DataFrame] = []
        for row in batch.itertuples(index=False):
            matrix, params = request_matrix(row.request)
            scored = response_scores(row.response) if row.response is not None else None
            if matrix is None or scored is None or len(scored[0]) != len(matrix):
                continue  # an answer we cannot pair with its epochs is counted, not profiled
            proba, label = scored
            sid = params.get("subject_id")
            client_id = row.client_request_id or params.get("client_request_id")
            rms = channel_rms(matrix, n_times).astype(np.float32)
            frame = pd.DataFrame({"score": proba, "predicted": label.astype(np.int32),
                                  "epoch_index": np.arange(len(proba), dtype=np.int32),
                                  "rms": list(rms)})
            for c in cols:
                frame[c] = client_id if c == "client_request_id" else getattr(row, c)
            frame["subject_id"] = int(sid) if isinstance(sid, (int, float, str)) and str(sid).isdigit() else None
            out.append(frame)
        if out:
            yield pd.concat(out, ignore_index=True)


def scored_epochs(spark: SparkSession, cfg: Config, log: DataFrame, window_starts: list[int]) -> pd.DataFrame:
    """Answered epochs of the given windows with score, prediction, channel RMS and, where
    the labels table has them, the true label (NaN otherwise)."""
    n_times = cfg.preprocess.n_times
    lo, hi = min(window_starts), max(window_starts) + cfg.monitoring.window_s * 1000
    rows = (log.where((F.col("timestamp_ms") >= lo) & (F.col("timestamp_ms") < hi))  # file skipping
               .where(F.col("window_start").isin(window_starts) & (F.col("status_code") == 200))
               .select("window_start", "model_name", "model_version", "served_entity", "client_request_id",
                       "request", "response"))
    epochs = rows.mapInPandas(lambda it: _epochs_of(it, n_times), EPOCH_SCHEMA)
    if table_exists(spark, cfg, "labels"):
        labels = read_table(spark, cfg, "labels").select("client_request_id", "epoch_index", "label")
        epochs = epochs.join(labels, ["client_request_id", "epoch_index"], "left")
    else:
        epochs = epochs.withColumn("label", F.lit(None).cast("int"))
    frame = epochs.toPandas()
    frame["label"] = frame["label"].astype("float64")
    return frame
