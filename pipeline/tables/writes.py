"""The one writer that replaces some subjects' rows of a table in one Delta commit.

Ingest, preprocess and score all rewrite "these subjects" (for score: these subjects under
one model version): an overwrite with ``replaceWhere``, so a retried or repeated write
replaces the rows it wrote before instead of adding to them, and every other subject's
rows stay as they are.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from pipeline import storage
from pipeline.config import Config

__all__ = ["subjects_condition", "replace_subjects", "append_rows"]


def subjects_condition(subjects: Sequence[int], where: str | None = None) -> str:
    """The replaceWhere predicate: ``[where AND] subject_id IN (...)``."""
    if not subjects:
        raise ValueError("replace_subjects needs at least one subject")
    condition = f"subject_id IN ({', '.join(str(int(s)) for s in sorted(set(subjects)))})"
    return f"{where} AND {condition}" if where else condition


def replace_subjects(cfg: Config, df: DataFrame, table: str, subjects: Sequence[int], *,
                     where: str | None = None, schema: T.StructType | None = None,
                     partition_by: Sequence[str] = ("subject_id",), properties: Mapping[str, str] | None = None,
                     metadata: Mapping[str, Any] | None = None, merge_schema: bool = False,
                     conf: Mapping[str, str] | None = None) -> None:
    """Replace ``subjects``' rows of ``table`` (logical name) by ``df`` in one commit; creates
    the table (``schema``, default df's; ``partition_by``; ``properties``) when missing.
    ``conf``: session settings for this write only (classic sessions; see storage.session_conf)."""
    spark = df.sparkSession
    storage.create_table(spark, cfg, table, schema or df.schema, partition_by, properties)
    writer = (df.write.format("delta").mode("overwrite")
              .option("replaceWhere", subjects_condition(subjects, where)))
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    if metadata:
        writer = writer.option("userMetadata", json.dumps(dict(metadata)))
    with storage.session_conf(spark, conf or {}):
        storage.save(writer, cfg, table)


def append_rows(cfg: Config, df: DataFrame, table: str) -> None:
    """Append ``df`` to a log table (created with df's schema when missing), one commit."""
    storage.create_table(df.sparkSession, cfg, table, df.schema)
    storage.save(df.write.format("delta").mode("append"), cfg, table)
