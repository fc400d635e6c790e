"""Reading the inference log for the monitor: columns, windows, and scored epochs.

The local log and Databricks' legacy inference tables have the same columns; AI Gateway
payload tables name two of them differently (``request_time``, ``execution_duration_ms``)
and carry no ``request_metadata``, so ``normalized_log`` maps both to one shape. Parsing
the request and response JSON happens in ``mapInPandas`` (orjson, on the executors), only for
the windows the monitor is about to process, and for request bodies only in a sample.
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

__all__ = ["normalized_log", "window_counts", "scored_epochs", "SCORE_SCHEMA", "RMS_SCHEMA"]

SCORE_SCHEMA = ("window_start long, model_name string, model_version string, served_entity string, "
                "client_request_id string, request_key long, epoch_index int, score double, predicted int")
RMS_SCHEMA = "request_key long, epoch_index int, rms array<float>"


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


def _scores_of(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    keys = ["window_start", "model_name", "model_version", "served_entity", "client_request_id", "request_key"]
    for batch in batches:
        out: list[pd.DataFrame] = []
        for row in batch.itertuples(index=False):
            scored = response_scores(row.response) if row.response is not None else None
            if scored is None or len(scored[0]) != len(scored[1]):
                continue  # an answer we cannot read is counted (window_counts), not profiled
            proba, label = scored
            frame = pd.DataFrame({"score": proba, "predicted": label.astype(np.int32),
                                  "epoch_index": np.arange(len(proba), dtype=np.int32)})
            for c in keys:
                frame[c] = getattr(row, c)
            out.append(frame)
        if out:
            yield pd.concat(out, ignore_index=True)


def _rms_of(batches: Iterator[pd.DataFrame], n_times: int) -> Iterator[pd.DataFrame]:
    for batch in batches:
        out: list[pd.DataFrame] = []
        for row in batch.itertuples(index=False):
            matrix, _ = request_matrix(row.request)
            if matrix is None:
                continue
            out.append(pd.DataFrame({"request_key": row.request_key,
                                     "epoch_index": np.arange(len(matrix), dtype=np.int32),
                                     "rms": list(channel_rms(matrix, n_times).astype(np.float32))}))
        if out:
            yield pd.concat(out, ignore_index=True)


_GROUP = ["window_start", "model_name", "model_version", "served_entity"]


def _sample(frame: pd.DataFrame, budget: int) -> pd.Series:
    """Request keys whose bodies the monitor parses: per window and served model, requests in
    the order of their key (a hash of the request id) until they hold ``budget`` epochs, so at
    least one request and the same ones on every run."""
    per_request = frame.groupby(_GROUP + ["request_key"]).size().rename("epochs").reset_index()
    per_request = per_request.sort_values(_GROUP + ["request_key"])
    before = per_request.groupby(_GROUP)["epochs"].cumsum() - per_request["epochs"]
    return per_request.loc[before < budget, "request_key"]


def scored_epochs(spark: SparkSession, cfg: Config, log: DataFrame, window_starts: list[int]) -> pd.DataFrame:
    """Answered epochs of the given windows with score, prediction, channel RMS and, where
    the labels table has them, the true label (NaN otherwise).

    Scores come from every response. Channel RMS needs the request bodies, which are ~99% of
    the log's bytes: it is computed for a deterministic sample of requests holding about
    ``monitoring.input_sample_epochs`` epochs per window and served model (all when 0, see
    ``_sample``), so that only the sample's bodies leave the JVM and get parsed; rms is None
    elsewhere."""
    n_times = cfg.preprocess.n_times
    lo, hi = min(window_starts), max(window_starts) + cfg.monitoring.window_s * 1000
    rows = (log.where((F.col("timestamp_ms") >= lo) & (F.col("timestamp_ms") < hi))  # file skipping
               .where(F.col("window_start").isin(window_starts) & (F.col("status_code") == 200))
               .withColumn("request_key", F.xxhash64("databricks_request_id", "timestamp_ms")))
    labelled = table_exists(spark, cfg, "labels")
    if labelled:  # the join key: the column Databricks fills from the request; where it is empty, the
        # request's own field or params (a byte scan first: parsing every body costs seconds per GB)
        rows = rows.withColumn("client_request_id", F.coalesce(F.col("client_request_id"), F.when(
            F.col("request").contains('"client_request_id"'),
            F.coalesce(F.get_json_object("request", "$.client_request_id"),
                       F.get_json_object("request", "$.params.client_request_id")))))
    scores = (rows.select(*_GROUP, "client_request_id", "request_key", "response")
                  .mapInPandas(_scores_of, SCORE_SCHEMA))
    if labelled:
        labels = read_table(spark, cfg, "labels").select("client_request_id", "epoch_index", "label")
        scores = scores.join(labels, ["client_request_id", "epoch_index"], "left")
    else:
        scores = scores.withColumn("label", F.lit(None).cast("int"))
    frame = scores.toPandas()
    frame["label"] = frame["label"].astype("float64")
    if frame.empty:
        return frame.assign(rms=pd.Series(dtype=object))
    budget = cfg.monitoring.input_sample_epochs
    if budget:
        keys = spark.createDataFrame(_sample(frame, budget).to_frame(), "request_key long")
        rows = rows.join(F.broadcast(keys), "request_key")
    sampled = (rows.select("request_key", "request")
                   .mapInPandas(lambda it: _rms_of(it, n_times), RMS_SCHEMA).toPandas())
    return frame.merge(sampled, on=["request_key", "epoch_index"], how="left")
