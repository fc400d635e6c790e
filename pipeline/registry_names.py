"""Registry names every job agrees on: aliases, what a training run and its version record,
and how evaluation runs are tagged for the promotion gate. Plain constants, importable
without MLflow, scikit-learn or Spark (promote moves an alias with little more)."""
from __future__ import annotations

__all__ = ["CHALLENGER", "CHAMPION", "PARAM_TRAINING_SUBJECTS", "PARAM_FEATURES_TABLE", "PARAM_FEATURES_VERSION",
           "PARAM_N_FEATURES", "TAG_FINGERPRINT", "TAG_CLASSIFIER", "TAG_ALIGNMENT", "TAG_TARGET", "TAG_VERSION",
           "TAG_TARGET_SET", "TAG_COMPARISON"]

CHALLENGER = "challenger"
CHAMPION = "champion"

# What a training run records (params on the run, tags on the model version).
PARAM_TRAINING_SUBJECTS = "training_subjects"
PARAM_FEATURES_TABLE = "features_table"
PARAM_FEATURES_VERSION = "features_table_version"
PARAM_N_FEATURES = "n_features"
TAG_FINGERPRINT = "p300.fingerprint"
TAG_CLASSIFIER = "p300.classifier"  # training.classifier of the version (pipeline/classifiers.py)
TAG_ALIGNMENT = "p300.alignment"  # training.alignment: none | recenter

# How `p300 evaluate` tags its runs (what `p300 promote` reads).
TAG_TARGET = "p300.served_entity"
TAG_VERSION = "p300.model_version"
TAG_TARGET_SET = "p300.target_set"  # champion, challenger or both
TAG_COMPARISON = "p300.comparison_id"  # shared by the two runs of one `both` evaluation
