"""Every Delta table of the pipeline in one place: logical names and schemas (schemas),
readers (raw, features, logs), the one subjects-replacing writer (writes) and the
per-subject calibration references (references).

Job modules read and write tables only through this package and ``pipeline.storage``
(locations, existence, versions, files); none imports another job module.
"""
from pipeline.tables.features import FeaturesData, FeaturesUnusable, arrow_to_arrays, feature_subjects, load_features
from pipeline.tables.logs import latest_per_key, log_rows
from pipeline.tables.raw import raw_channels, raw_samples, raw_subject_state
from pipeline.tables.references import read_references, refresh_references
from pipeline.tables.schemas import (FEATURES, FEATURES_SCHEMA, FEATURES_TABLE_PROPERTIES, INGEST_LOG, INGEST_LOG_SCHEMA,
                                     OK_STATUSES, PREDICTIONS, PREPROCESS_LOG, PREPROCESS_LOG_SCHEMA, RAW_EEG,
                                     RAW_TABLE_PROPERTIES, SUBJECT_REFERENCE, SUBJECT_REFERENCE_SCHEMA, raw_schema)
from pipeline.tables.writes import append_rows, replace_subjects, subjects_condition

__all__ = [
    "RAW_EEG", "INGEST_LOG", "FEATURES", "PREPROCESS_LOG", "PREDICTIONS", "SUBJECT_REFERENCE", "OK_STATUSES",
    "INGEST_LOG_SCHEMA", "RAW_TABLE_PROPERTIES", "raw_schema", "FEATURES_SCHEMA", "FEATURES_TABLE_PROPERTIES",
    "PREPROCESS_LOG_SCHEMA", "SUBJECT_REFERENCE_SCHEMA", "read_references", "refresh_references",
    "raw_subject_state", "raw_channels", "raw_samples",
    "FeaturesData", "FeaturesUnusable", "feature_subjects", "arrow_to_arrays", "load_features",
    "log_rows", "latest_per_key",
    "subjects_condition", "replace_subjects", "append_rows",
]
