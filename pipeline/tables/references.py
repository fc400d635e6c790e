"""The per-subject reference table (``subject_reference``): each subject's unlabelled-calibration
reference for the models that re-centre subjects (``training.alignment: recenter``).

A subject's reference is the Riemannian mean of the covariances of its first
``training.calibration_fraction`` epochs (by ``epoch_idx``, labels unused), channels x
channels (``pipeline.classifiers.subject_reference``). It depends on the subject's
features and the configuration only, not on a fitted model, so one row serves every
version that re-centres. Computed per subject on the executors
(``groupBy("subject_id").applyInPandas``, like preprocessing).

``refresh_references`` is idempotent: a subject is recomputed only when it has no row, or
its row was made from other features (``features_digest``: an order-independent hash of
the subject's epoch_idx, event_sample and features) or another calibration fraction.
Nothing to recompute: nothing is written.
"""
from __future__ import annotations

from datetime import datetime, timezone
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline import storage
from pipeline.config import Config
from pipeline.tables.schemas import FEATURES, SUBJECT_REFERENCE, SUBJECT_REFERENCE_SCHEMA
from pipeline.tables.writes import replace_subjects

__all__ = ["subject_digests", "stale_subjects", "refresh_references", "read_references", "compute_reference_row"]


def subject_digests(features: DataFrame) -> dict[int, tuple[int, int]]:
    """subject_id -> (epochs, digest) of a features DataFrame, in one aggregation."""
    rows = (features.groupBy("subject_id")
            .agg(F.count("*").alias("n"),
                 F.bit_xor(F.xxhash64("epoch_idx", "event_sample", "features")).alias("digest"))
            .collect())
    return {int(r.subject_id): (int(r.n), int(r.digest)) for r in rows}


def read_references(spark: SparkSession, cfg: Config, subjects: list[int] | None = None) -> DataFrame | None:
    """The table's rows (of ``subjects``), or None when the table does not exist yet."""
    if not storage.table_exists(spark, cfg, SUBJECT_REFERENCE):
        return None
    refs = storage.read_table(spark, cfg, SUBJECT_REFERENCE)
    return refs.where(F.col("subject_id").isin([int(s) for s in subjects])) if subjects else refs


def stale_subjects(spark: SparkSession, cfg: Config, digests: dict[int, tuple[int, int]]) -> list[int]:
    """The subjects of ``digests`` whose reference is missing or was made from other
    features or another calibration fraction."""
    refs = read_references(spark, cfg, list(digests))
    stored = {} if refs is None else {
        int(r.subject_id): (int(r.n_epochs), int(r.features_digest), float(r.calibration_fraction))
        for r in refs.select("subject_id", "n_epochs", "features_digest", "calibration_fraction").collect()}
    fraction = float(cfg.training.calibration_fraction)
    return sorted(s for s, (n, digest) in digests.items() if stored.get(s) != (n, digest, fraction))


def compute_reference_row(pdf: pd.DataFrame, n_times: int, fraction: float) -> dict:
    """One subject's row (without the digest and version columns) from its features rows:
    the reference of its first ``fraction`` epochs by epoch_idx."""
    from pipeline.classifiers import subject_reference
    from pipeline.subject_cv import calibration_split

    pdf = pdf.sort_values("epoch_idx")
    n = len(pdf)
    n_cal = calibration_split(n, fraction)
    X = np.stack([np.asarray(v, dtype=np.float64) for v in pdf["features"].iloc[:n_cal]])
    epochs = X.reshape(n_cal, -1, n_times)
    ref = subject_reference(epochs)
    return {"subject_id": int(pdf["subject_id"].iloc[0]), "n_channels": int(ref.shape[0]),
            "reference": ref.ravel().tolist(), "n_epochs": n, "calibration_epochs": int(n_cal),
            "calibration_last_epoch_idx": int(pdf["epoch_idx"].iloc[n_cal - 1]), "calibration_fraction": float(fraction)}


def refresh_references(spark: SparkSession, cfg: Config, subjects: list[int], features_version: int) -> list[int]:
    """Make ``subjects``' references current for the features table at ``features_version``;
    returns the subjects (re)computed, [] when every one was current (then nothing is
    written). Subjects with fewer than two epochs get none (nothing left to score)."""
    features = (storage.read_table(spark, cfg, FEATURES, features_version)
                .where(F.col("subject_id").isin([int(s) for s in subjects])))
    digests = {s: d for s, d in subject_digests(features).items() if d[0] >= 2}
    stale = stale_subjects(spark, cfg, digests)
    if not stale:
        return []
    n_times, fraction = cfg.preprocess.n_times, float(cfg.training.calibration_fraction)
    columns = [f.name for f in SUBJECT_REFERENCE_SCHEMA.fields]
    stamp = datetime.now(timezone.utc)

    def per_subject(pdf: pd.DataFrame) -> pd.DataFrame:
        row = compute_reference_row(pdf, n_times, fraction)
        row.update(features_digest=digests[row["subject_id"]][1], features_version=int(features_version), created_at=stamp)
        return pd.DataFrame([row])[columns]

    frame = (features.where(F.col("subject_id").isin(stale))
             .select("subject_id", "epoch_idx", "features")
             .groupBy("subject_id").applyInPandas(per_subject, SUBJECT_REFERENCE_SCHEMA))
    replace_subjects(cfg, frame, SUBJECT_REFERENCE, stale, schema=SUBJECT_REFERENCE_SCHEMA, partition_by=(),
                     metadata={"features_version": int(features_version), "subjects": stale})
    return stale
