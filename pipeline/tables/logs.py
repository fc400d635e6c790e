"""Readers of the run logs (ingest_log, preprocess_log): every row oldest first, and the
latest row per key, which is how a job learns what earlier runs did."""
from __future__ import annotations

from typing import Any, Hashable, Iterable, Sequence

from pyspark.sql import SparkSession

from pipeline import storage
from pipeline.config import Config

__all__ = ["log_rows", "latest_per_key"]


def log_rows(spark: SparkSession, cfg: Config, table: str, columns: Sequence[str]) -> list[dict[str, Any]]:
    """``columns`` (which must include ``time``) of every row of a log table, oldest first;
    [] when the table does not exist yet."""
    if not storage.table_exists(spark, cfg, table):
        return []
    rows = storage.read_table(spark, cfg, table).select(*columns).collect()
    return [r.asDict() for r in sorted(rows, key=lambda r: r.time)]


def latest_per_key(rows: Iterable[dict[str, Any]], key: str) -> dict[Hashable, dict[str, Any]]:
    """The last row per value of ``key`` among rows given oldest first."""
    return {row[key]: row for row in rows}
