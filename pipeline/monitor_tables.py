"""The monitoring tables' contract: names and schemas, shared by the endpoint server's
inference log writer (pyarrow, no Spark) and the monitor job (Spark).

``inference_log`` has the columns of Databricks' inference tables (legacy payload
table names; ``served_entity_id`` as AI Gateway's tables have it). ``monitor_profile``
and ``monitor_drift`` follow Lakehouse Monitoring's profile-metrics and drift-metrics
tables: one row per window, model, slice and column, ``:table`` for model-level rows.
"""
from __future__ import annotations

from typing import Any

__all__ = ["INFERENCE_LOG", "INFERENCE_LOG_DDL", "PROFILE_DDL", "DRIFT_DDL", "FLAGS_DDL", "LABELS_DDL",
           "TABLE_COLUMN", "SLICE_KEY", "RETRAIN_FLAG", "arrow_schema", "spark_schema"]

# (column, Spark SQL type); the order is the table's
INFERENCE_LOG: tuple[tuple[str, str], ...] = (
    ("databricks_request_id", "string"),
    ("client_request_id", "string"),
    ("date", "date"),
    ("timestamp_ms", "bigint"),
    ("status_code", "int"),
    ("sampling_fraction", "double"),
    ("execution_time_ms", "bigint"),
    ("request", "string"),
    ("response", "string"),
    ("served_entity_id", "string"),
    ("request_metadata", "map<string,string>"),  # endpoint_name, model_name, model_version, served_entity_name
)
INFERENCE_LOG_DDL = ", ".join(f"{n} {t}" for n, t in INFERENCE_LOG)

_KEYS = ("window struct<start: timestamp, end: timestamp>, granularity string, model_id string, "
         "model_name string, model_version string, slice_key string, slice_value string, column_name string")
PROFILE_DDL = (_KEYS + ", log_type string, count bigint, epoch_count bigint, error_rate double, "
               "latency_p50_ms double, latency_p95_ms double, latency_p99_ms double, mean double, stddev double, "
               "min double, max double, quantiles array<double>, predicted_target_rate double, "
               "labeled_count bigint, roc_auc double, balanced_accuracy double, computed_at timestamp, "
               "monitor_run_id string")
DRIFT_DDL = (_KEYS + ", drift_type string, count bigint, baseline_count bigint, "
             "ks_test struct<statistic: double, pvalue: double>, wasserstein_distance double, "
             "population_stability_index double, mean_delta double, computed_at timestamp, monitor_run_id string")
FLAGS_DDL = ("flag string, model_id string, slice_value string, window_end timestamp, fired boolean, metric string, "
             "threshold double, k int, n int, violated int, reason string, set_at timestamp, monitor_run_id string")
LABELS_DDL = "client_request_id string, epoch_index int, label int, subject_id int"

TABLE_COLUMN = ":table"  # Lakehouse Monitoring's column_name of model-level metrics
SLICE_KEY = "served_entity"
RETRAIN_FLAG = "retrain"


def arrow_schema() -> Any:
    """inference_log as a pyarrow schema (what the server's flusher writes with deltalake)."""
    import pyarrow as pa

    types = {"string": pa.large_string(), "date": pa.date32(), "bigint": pa.int64(), "int": pa.int32(),
             "double": pa.float64(), "map<string,string>": pa.map_(pa.string(), pa.string())}
    return pa.schema([pa.field(n, types[t]) for n, t in INFERENCE_LOG])


def spark_schema(ddl: str) -> Any:
    from pyspark.sql.types import StructType

    return StructType.fromDDL(ddl)
