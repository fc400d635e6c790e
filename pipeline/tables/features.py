"""Readers of the features table at one Delta version: its subjects, and their epochs as
one float32 matrix on the driver (train and evaluate both need exactly this)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline import storage
from pipeline.config import Config
from pipeline.tables.schemas import FEATURES

__all__ = ["FeaturesData", "FeaturesUnusable", "feature_subjects", "arrow_to_arrays", "load_features"]


class FeaturesUnusable(ValueError):
    """The features cannot form one matrix (ragged or null vectors); the message says where."""


@dataclass
class FeaturesData:
    X: np.ndarray  # float32 (n_epochs, n_features), C-contiguous
    y: np.ndarray  # int64 labels (event ids)
    groups: np.ndarray  # int64 subject id per row
    epoch_idx: np.ndarray  # int64 epoch index per row
    table: str
    table_version: int

    @property
    def subjects(self) -> list[int]:
        return [int(s) for s in np.unique(self.groups)]


def feature_subjects(spark: SparkSession, cfg: Config, version: int) -> list[int]:
    """Subject ids present in the features table at ``version`` (partition values: cheap)."""
    rows = storage.read_table(spark, cfg, FEATURES, version=version).select("subject_id").distinct().collect()
    return sorted(int(r[0]) for r in rows)


def arrow_to_arrays(table: pa.Table, n_features: int | None = None) -> tuple[np.ndarray, ...]:
    """(X float32 (n, f), label, subject_id, epoch_idx) from an Arrow table of the features
    schema. Fills one preallocated matrix chunk by chunk from the list column's flat values,
    so the only other copy alive is the Arrow table itself."""
    n = table.num_rows
    col = table.column("features")
    if col.null_count:
        raise FeaturesUnusable(f"features table: {col.null_count} epoch(s) have a null feature vector")
    if n_features is None:
        first = next((c for c in col.chunks if len(c)), None)
        n_features = int(pc.list_value_length(first)[0].as_py()) if first is not None else 0
    X = np.empty((n, n_features), dtype=np.float32)
    row = 0
    for chunk in col.chunks:
        if not len(chunk):
            continue
        lengths = pc.list_value_length(chunk)
        lo, hi = pc.min_max(lengths).values()
        if lo.as_py() != n_features or hi.as_py() != n_features:
            raise FeaturesUnusable(
                f"features table: vectors of different lengths ({lo.as_py()}..{hi.as_py()}, expected {n_features}); "
                "reprocess the subjects with one configuration")
        flat = chunk.flatten()
        if flat.null_count:
            raise FeaturesUnusable("features table: feature vectors contain nulls")
        X[row:row + len(chunk)] = flat.to_numpy(zero_copy_only=False).reshape(len(chunk), n_features)
        row += len(chunk)

    def ints(name: str) -> np.ndarray:
        return table.column(name).to_numpy().astype(np.int64, copy=False)

    return X, ints("label"), ints("subject_id"), ints("epoch_idx")


def load_features(spark: SparkSession, cfg: Config, subjects: list[int], version: int) -> FeaturesData:
    """The selected subjects' epochs at one table version, ordered by (subject, epoch).

    Through Arrow (``DataFrame.toArrow``: columnar batches, no Python Rows; Spark Connect
    sends Arrow batches too). Raises FeaturesUnusable, naming the table and version."""
    frame = (storage.read_table(spark, cfg, FEATURES, version=version)
             .where(F.col("subject_id").isin([int(s) for s in subjects]))
             .select(F.col("subject_id").cast("int"), F.col("epoch_idx").cast("int"),
                     F.col("label").cast("int"), F.col("features").cast("array<float>"))
             .orderBy("subject_id", "epoch_idx"))
    table = frame.toArrow()
    try:
        X, y, groups, epochs = arrow_to_arrays(table)
    except FeaturesUnusable as exc:
        raise FeaturesUnusable(f"{cfg.table(FEATURES)} version {version}: {exc}") from None
    del table
    order = np.lexsort((epochs, groups))
    if np.any(order != np.arange(len(order))):  # toArrow keeps Spark's order; this is a guard
        X, y, groups, epochs = X[order], y[order], groups[order], epochs[order]
    return FeaturesData(X=X, y=y, groups=groups, epoch_idx=epochs, table=cfg.table(FEATURES), table_version=version)
