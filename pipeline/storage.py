"""Delta tables and files under the storage root, through Spark only.

Tables are addressed by their logical name (``raw_eeg``, ``features``, ...); the
configuration maps each to a Delta path under the root or to a catalog name, so the
same calls work locally, on DBFS and with Unity Catalog.
"""
from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from pipeline.config import Config

__all__ = ["is_catalog_name", "delta_table", "table_exists", "table_version", "read_table"]


def is_catalog_name(location: str) -> bool:
    return "." in location and "/" not in location and ":" not in location


def table_exists(spark: SparkSession, cfg: Config, name: str) -> bool:
    location = cfg.table(name)
    if is_catalog_name(location):
        return spark.catalog.tableExists(location)
    return DeltaTable.isDeltaTable(spark, location)


def delta_table(spark: SparkSession, cfg: Config, name: str) -> DeltaTable:
    location = cfg.table(name)
    return DeltaTable.forName(spark, location) if is_catalog_name(location) else DeltaTable.forPath(spark, location)


def table_version(spark: SparkSession, cfg: Config, name: str) -> int | None:
    """Current Delta version of a table, or None when it does not exist yet."""
    if not table_exists(spark, cfg, name):
        return None
    return int(delta_table(spark, cfg, name).history(1).select("version").first()[0])


def read_table(spark: SparkSession, cfg: Config, name: str, version: int | None = None) -> DataFrame:
    """A table as of ``version`` (time travel) or its latest version."""
    location = cfg.table(name)
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", int(version))
    return reader.table(location) if is_catalog_name(location) else reader.load(location)
