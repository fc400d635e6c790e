"""`p300 score`: offline batch scoring of the features table with a registered model.

The path for large scoring jobs: ``mlflow.pyfunc.spark_udf`` runs the model on the
executors, distributed like preprocessing, and the predictions land in a Delta table
(subject_id, epoch_idx, model_version, probability, label, ...). Re-scoring the same
subjects with the same version replaces their rows in one commit (idempotent).
"""
from __future__ import annotations

import argparse
from datetime import datetime, timezone

import mlflow
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.config import Config, ConfigError
from pipeline.registry import alias_version, mlflow_client, model_uri
from pipeline.report import Reporter
from pipeline.spark import get_spark
from pipeline.storage import read_table, table_exists, table_version
from pipeline.tables import FEATURES, PREDICTIONS, feature_subjects, replace_subjects

__all__ = ["score_features", "main"]

RESULT_TYPE = "probability double, label long"


def score_features(spark: SparkSession, cfg: Config, version: str, subjects: list[int] | None = None,
                   features_version: int | None = None) -> DataFrame:
    """Predictions for the (selected) epochs of the features table, lazily, as a DataFrame."""
    features = read_table(spark, cfg, FEATURES, features_version)
    if subjects:
        features = features.where(F.col("subject_id").isin(subjects))
    predict = mlflow.pyfunc.spark_udf(spark, model_uri(cfg, version), result_type=RESULT_TYPE, env_manager="local")
    return (
        features.withColumn("_pred", predict("features"))
        .select(
            F.col("subject_id").cast("int"),
            F.col("epoch_idx").cast("int"),
            F.col("event_sample").cast("long"),
            F.col("label").cast("int").alias("true_label"),
            F.lit(int(version)).alias("model_version"),
            F.col("_pred.probability").alias("probability"),
            F.col("_pred.label").cast("int").alias("label"),
            F.lit(datetime.now(timezone.utc)).alias("scored_at"),
        )
    )


def main(cfg: Config, args: argparse.Namespace, rep: Reporter) -> int:
    client = mlflow_client(cfg)
    mv = alias_version(client, cfg, args.alias)
    if mv is None:
        raise ConfigError(f"no version of {cfg.registry.model_name!r} has alias {args.alias!r}")
    spark = get_spark(cfg)
    if not table_exists(spark, cfg, FEATURES):
        raise ConfigError(f"no features table at {cfg.table(FEATURES)}: run `p300 preprocess` first")
    fversion = table_version(spark, cfg, FEATURES)
    available = feature_subjects(spark, cfg, fversion)
    subjects = args.subjects or available
    unknown = sorted(set(subjects) - set(available))
    if unknown:
        raise ConfigError(f"--subjects: no features for subjects {unknown} (processed: {available})")
    with rep.stage(f"scoring {len(subjects)} subjects with {cfg.registry.model_name} v{mv.version} (@{args.alias})"):
        frame = score_features(spark, cfg, mv.version, subjects, fversion)
        # re-scoring the same subjects with the same version replaces their rows
        replace_subjects(cfg, frame, PREDICTIONS, subjects, where=f"model_version = {int(mv.version)}",
                         partition_by=("model_version",))
    summary = (read_table(spark, cfg, PREDICTIONS)
               .where((F.col("model_version") == int(mv.version)) & F.col("subject_id").isin(subjects))
               .groupBy("subject_id")
               .agg(F.count("*").alias("epochs"), F.sum((F.col("label") == F.col("true_label")).cast("int")).alias("correct"),
                    F.sum((F.col("label") == cfg.signal.event_ids.target).cast("int")).alias("predicted_targets"))
               .orderBy("subject_id").collect())
    rep.table([(r.subject_id, r.epochs, r.predicted_targets, r.correct / r.epochs) for r in summary],
              ["subject", "epochs", "predicted targets", "accuracy"],
              title=f"score: v{mv.version} -> {cfg.table(PREDICTIONS)} (features version {fversion})")
    return 0
