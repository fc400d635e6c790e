"""The Delta tables' contract: logical names, schemas and table properties.

Plain data, no I/O: jobs, tests and the docs read the shape of every table here. The
configuration maps each logical name to a path under the storage root or a catalog name
(``Config.table``).
"""
from __future__ import annotations

from pyspark.sql import types as T

__all__ = ["RAW_EEG", "INGEST_LOG", "FEATURES", "PREPROCESS_LOG", "PREDICTIONS", "SUBJECT_REFERENCE", "INGEST_LOG_SCHEMA",
           "RAW_TABLE_PROPERTIES", "FEATURES_SCHEMA", "FEATURES_TABLE_PROPERTIES", "PREPROCESS_LOG_SCHEMA",
           "SUBJECT_REFERENCE_SCHEMA", "OK_STATUSES", "raw_schema"]

RAW_EEG, INGEST_LOG, FEATURES, PREPROCESS_LOG, PREDICTIONS, SUBJECT_REFERENCE = (
    "raw_eeg", "ingest_log", "features", "preprocess_log", "predictions", "subject_reference")

# ingest_log statuses whose file's data is in raw_eeg
OK_STATUSES = ("ingested", "replaced")

INGEST_LOG_SCHEMA = T.StructType([
    T.StructField("file", T.StringType(), False),
    T.StructField("subject_id", T.IntegerType(), True),
    T.StructField("status", T.StringType(), False),       # ingested | replaced | quarantined
    T.StructField("kind", T.StringType(), True),          # why quarantined (bad_name, nan_channels, ...) or "recovered"
    T.StructField("reason", T.StringType(), True),
    T.StructField("rows", T.LongType(), True),
    T.StructField("n_channels", T.IntegerType(), True),
    T.StructField("sfreq", T.DoubleType(), True),
    T.StructField("bytes", T.LongType(), True),
    T.StructField("ingest_id", T.StringType(), False),
    T.StructField("moved_to", T.StringType(), True),
    T.StructField("raw_version", T.LongType(), True),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("time", T.TimestampType(), False),
])

# Statistics only where a query filters: sample_idx (the per-subject "row 0" lookups);
# min/max over every EEG channel would cost write time and never skip a file.
RAW_TABLE_PROPERTIES = {"delta.dataSkippingStatsColumns": "sample_idx"}


def raw_schema(channels: list[str], stim_column: str) -> T.StructType:
    """raw_eeg's chunk rows (udfs.raw_chunks): samples as little-endian byte strings per channel."""
    return T.StructType([
        T.StructField("subject_id", T.IntegerType(), False),
        T.StructField("sample_idx", T.LongType(), False),
        T.StructField("n_samples", T.IntegerType(), False),
        *[T.StructField(c, T.BinaryType(), True) for c in channels],
        T.StructField(stim_column, T.BinaryType(), False),
        T.StructField("ingest_id", T.StringType(), False),
        T.StructField("sfreq", T.DoubleType(), False),
    ])


FEATURES_SCHEMA = T.StructType([
    T.StructField("subject_id", T.IntegerType(), False),
    T.StructField("epoch_idx", T.IntegerType(), False),
    T.StructField("event_sample", T.LongType(), False),
    T.StructField("label", T.IntegerType(), False),
    T.StructField("features", T.ArrayType(T.FloatType(), False), False),
])

# Statistics on the scalar columns only: for the array column Delta would keep just a null count.
FEATURES_TABLE_PROPERTIES = {"delta.dataSkippingStatsColumns": "epoch_idx,event_sample,label"}

PREPROCESS_LOG_SCHEMA = T.StructType([
    T.StructField("subject_id", T.IntegerType(), False),
    T.StructField("status", T.StringType(), False),        # ok | empty | failed
    T.StructField("reason", T.StringType(), True),
    T.StructField("n_samples", T.LongType(), True),
    T.StructField("n_channels", T.IntegerType(), True),
    T.StructField("sfreq", T.DoubleType(), True),
    T.StructField("n_events", T.IntegerType(), True),
    T.StructField("n_out_of_bounds", T.IntegerType(), True),
    T.StructField("n_rejected", T.IntegerType(), True),
    T.StructField("n_epochs", T.IntegerType(), False),
    T.StructField("ingest_id", T.StringType(), False),
    T.StructField("raw_version", T.LongType(), False),
    T.StructField("features_version", T.LongType(), True),
    T.StructField("seconds", T.DoubleType(), True),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("time", T.TimestampType(), False),
])

# One row per subject: its unlabelled-calibration reference for models that re-centre
# subjects (pipeline/tables/references.py; docs/data-contract.md).
SUBJECT_REFERENCE_SCHEMA = T.StructType([
    T.StructField("subject_id", T.IntegerType(), False),
    T.StructField("n_channels", T.IntegerType(), False),
    T.StructField("reference", T.ArrayType(T.DoubleType(), False), False),  # channels x channels, row by row
    T.StructField("n_epochs", T.IntegerType(), False),             # the subject's epochs in the features table
    T.StructField("calibration_epochs", T.IntegerType(), False),   # the first ones, by epoch_idx, that gave it
    T.StructField("calibration_last_epoch_idx", T.IntegerType(), False),
    T.StructField("calibration_fraction", T.DoubleType(), False),
    T.StructField("features_digest", T.LongType(), False),        # the subject's features when computed
    T.StructField("features_version", T.LongType(), False),       # the features table version read
    T.StructField("created_at", T.TimestampType(), False),
])
