"""The retraining flag as the jobs read it: the monitor's latest verdict in ``monitor_flags``."""
from __future__ import annotations

from pipeline.config import Config
from pipeline.monitor_tables import RETRAIN_FLAG

__all__ = ["retrain_requested"]


def retrain_requested(cfg: Config) -> tuple[bool, str]:
    """(flag set, why) from the most recent rule evaluation; (False, ...) when there is none."""
    from pyspark.sql import functions as F

    from pipeline.spark import get_spark
    from pipeline.storage import read_table, table_exists

    spark = get_spark(cfg)
    if not table_exists(spark, cfg, "monitor_flags"):
        return False, "the monitor has not evaluated the rule yet"
    row = (read_table(spark, cfg, "monitor_flags").where(F.col("flag") == RETRAIN_FLAG)
           .orderBy(F.col("set_at").desc()).limit(1).collect())
    if not row:
        return False, "the monitor has not evaluated the rule yet"
    return bool(row[0]["fired"]), f"{row[0]['model_id']}: {row[0]['reason']}"
