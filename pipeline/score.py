"""`p300 score`: offline batch scoring of the features table with a registered model.

The path for large scoring jobs: ``mlflow.pyfunc.spark_udf`` runs the model on the
executors, distributed like preprocessing, and the predictions land in a Delta table
(subject_id, epoch_idx, model_version, probability, label, ...). Re-scoring the same
subjects with the same version replaces their rows in one commit (idempotent).

A model that re-centres subjects (tag ``p300.alignment: recenter``) is scored under the
unlabelled-calibration protocol: ``subject_reference`` (pipeline/tables/references.py) is
brought up to date for the subjects first (only missing or stale rows are written), then
joined to the features by ``subject_id``, and each subject's epochs are scored with its
reference on the executors. Every row says which protocol it got (``protocol``:
``calibrated`` or ``source_only``) and whether it was in the calibration block itself
(``calibration_block``). Other models ignore the table.
"""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Iterator

import mlflow
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.classifiers import RECENTER
from pipeline.config import Config, ConfigError
from pipeline.registry import alias_version, mlflow_client, model_uri
from pipeline.registry_names import TAG_ALIGNMENT
from pipeline.report import Reporter
from pipeline.spark import get_spark
from pipeline.storage import read_table, table_exists, table_version
from pipeline.tables import (FEATURES, PREDICTIONS, feature_subjects, read_references, refresh_references,
                             replace_subjects)

__all__ = ["score_features", "score_calibrated", "recenters", "main", "SOURCE_ONLY", "CALIBRATED"]

RESULT_TYPE = "probability double, label long"
SOURCE_ONLY, CALIBRATED = "source_only", "calibrated"
_CALIBRATED_TYPE = ("subject_id int, epoch_idx int, event_sample long, true_label int, probability double, "
                    "label int, protocol string, calibration_block boolean")


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
            F.lit(SOURCE_ONLY).alias("protocol"),
            F.lit(False).alias("calibration_block"),
            F.lit(datetime.now(timezone.utc)).alias("scored_at"),
        )
    )


def recenters(cfg: Config, mv) -> bool:
    """Whether a registered version re-centres subjects: its alignment tag, else the model itself."""
    tag = (mv.tags or {}).get(TAG_ALIGNMENT)
    if tag is not None:
        return tag == RECENTER
    return mlflow.pyfunc.load_model(model_uri(cfg, mv.version)).unwrap_python_model().alignment == RECENTER


def score_calibrated(spark: SparkSession, cfg: Config, version: str, subjects: list[int],
                     features_version: int) -> DataFrame:
    """Predictions of a re-centring model, each subject with its ``subject_reference`` row
    (joined by subject_id; a subject without one is scored source-only). The fitted model
    travels to the executors with the function (a small pickle); the columns are those of
    ``score_features``."""
    from pipeline.model import as_matrix

    model = mlflow.pyfunc.load_model(model_uri(cfg, version)).unwrap_python_model()
    features = (read_table(spark, cfg, FEATURES, features_version).where(F.col("subject_id").isin(subjects))
                .select(F.col("subject_id").cast("int"), F.col("epoch_idx").cast("int"),
                        F.col("event_sample").cast("long"), F.col("label").cast("int").alias("true_label"),
                        "features"))
    refs = read_references(spark, cfg, subjects)
    if refs is None:
        features = features.withColumn("reference", F.lit(None).cast("array<double>")) \
            .withColumn("calibration_last_epoch_idx", F.lit(None).cast("int"))
    else:
        features = features.join(F.broadcast(refs.select("subject_id", "reference", "calibration_last_epoch_idx")),
                                 "subject_id", "left")

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            for _, part in pdf.groupby("subject_id", sort=False):
                ref = part["reference"].iloc[0]
                calibrated = ref is not None and len(ref) > 0
                X = as_matrix(np.stack(part["features"].to_numpy()), model.n_features, "features")
                proba, labels = model.predict_matrix(X, np.asarray(ref, dtype=np.float64) if calibrated else None)
                last = part["calibration_last_epoch_idx"].iloc[0]
                yield pd.DataFrame({
                    "subject_id": part["subject_id"].to_numpy(), "epoch_idx": part["epoch_idx"].to_numpy(),
                    "event_sample": part["event_sample"].to_numpy(), "true_label": part["true_label"].to_numpy(),
                    "probability": proba, "label": labels.astype(np.int32),
                    "protocol": CALIBRATED if calibrated else SOURCE_ONLY,
                    "calibration_block": (part["epoch_idx"].to_numpy() <= last) if calibrated else False})

    return (features.mapInPandas(predict, _CALIBRATED_TYPE)
            .select("subject_id", "epoch_idx", "event_sample", "true_label",
                    F.lit(int(version)).alias("model_version"), "probability", "label", "protocol",
                    "calibration_block", F.lit(datetime.now(timezone.utc)).alias("scored_at")))


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
    calibrated = recenters(cfg, mv)
    if calibrated:
        with rep.stage(f"subject references for {len(subjects)} subjects (first "
                       f"{cfg.training.calibration_fraction:.0%} of each subject's epochs, unlabelled)"):
            written = refresh_references(spark, cfg, subjects, fversion)
        rep.info(f"{cfg.table('subject_reference')}: " + (f"(re)computed subjects {written}" if written
                                                          else "every subject's reference is current"))
    with rep.stage(f"scoring {len(subjects)} subjects with {cfg.registry.model_name} v{mv.version} (@{args.alias}), "
                   f"{CALIBRATED if calibrated else SOURCE_ONLY}"):
        frame = (score_calibrated(spark, cfg, mv.version, subjects, fversion) if calibrated
                 else score_features(spark, cfg, mv.version, subjects, fversion))
        # re-scoring the same subjects with the same version replaces their rows; a table
        # written before the protocol columns existed gains them
        replace_subjects(cfg, frame, PREDICTIONS, subjects, where=f"model_version = {int(mv.version)}",
                         partition_by=("model_version",), merge_schema=True)
    summary = (read_table(spark, cfg, PREDICTIONS)
               .where((F.col("model_version") == int(mv.version)) & F.col("subject_id").isin(subjects))
               .groupBy("subject_id")
               .agg(F.count("*").alias("epochs"), F.first("protocol").alias("protocol"), F.sum((F.col("label") == F.col("true_label")).cast("int")).alias("correct"),
                    F.sum((F.col("label") == cfg.signal.event_ids.target).cast("int")).alias("predicted_targets"))
               .orderBy("subject_id").collect())
    rep.table([(r.subject_id, r.protocol, r.epochs, r.predicted_targets, r.correct / r.epochs) for r in summary],
              ["subject", "protocol", "epochs", "predicted targets", "accuracy"],
              title=f"score: v{mv.version} -> {cfg.table(PREDICTIONS)} (features version {fversion})")
    return 0
