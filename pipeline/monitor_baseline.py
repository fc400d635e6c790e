"""The training baseline of a model version, logged with that version's run.

Drift is measured against what the version saw in training: the Target probability of its
training epochs, each from a refit that left the epoch's subject out (as its cross-validated
ROC AUC was measured), and their per-channel RMS (the features table version and subjects its
run records). Computed once, on the first monitor run that meets the version, and logged as
``monitor/baseline.parquet`` on the version's training run; later runs download it, so
every window of a version is compared with the same sample.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.config import Config
from pipeline.monitor_metrics import Baseline
from pipeline.registry import get_version, mlflow_client, model_uri, version_lineage
from pipeline.report import Reporter
from pipeline.storage import read_table
from udfs.drift import channel_rms

__all__ = ["load_baseline", "ARTIFACT"]

ARTIFACT = "monitor/baseline.parquet"


def _features(spark: SparkSession, cfg: Config, subjects: list[int], version: int) -> tuple[np.ndarray, ...]:
    table = (read_table(spark, cfg, "features", version=version)
             .where(F.col("subject_id").isin([int(s) for s in subjects]))
             .select("subject_id", "label", F.col("features").cast("array<float>")).toArrow())
    if not table.num_rows:
        return np.empty((0, 0), np.float32), np.empty(0, int), np.empty(0, int)
    col = pc.list_flatten(table.column("features").combine_chunks())
    X = np.ascontiguousarray(col.to_numpy(zero_copy_only=False).reshape(table.num_rows, -1), dtype=np.float32)
    return X, table.column("label").to_numpy(), table.column("subject_id").to_numpy()


def _scores(estimator, target: int, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Target probability of each training epoch from a model that did not see its subject
    (leave-subjects-out, like the version's cv_roc_auc): what served subjects look like to it.
    In-sample scores would be too confident, and every new subject would read as drift."""
    from sklearn.base import clone
    from sklearn.model_selection import GroupKFold, cross_val_predict

    n_groups = len(np.unique(groups))
    if n_groups < 2:  # one subject: in-sample is all there is
        return estimator.predict_proba(X)[:, list(estimator.classes_).index(target)]
    proba = cross_val_predict(clone(estimator), X, y, groups=groups, cv=GroupKFold(min(5, n_groups)),
                              method="predict_proba")
    return proba[:, list(np.unique(y)).index(target)]


def _compute(spark: SparkSession, cfg: Config, version: str, subjects: list[int], fversion: int) -> pd.DataFrame:
    import mlflow.pyfunc

    X, y, groups = _features(spark, cfg, subjects, fversion)
    inner = mlflow.pyfunc.load_model(model_uri(cfg, version)).unwrap_python_model()
    proba = _scores(inner.estimator, cfg.signal.event_ids.target, X, y, groups)
    rms = channel_rms(X, cfg.preprocess.n_times)
    return pd.DataFrame({"score": proba, **{f"rms_{i}": rms[:, i] for i in range(rms.shape[1])}})


def load_baseline(spark: SparkSession, cfg: Config, version: str, rep: Reporter) -> Baseline | None:
    """The version's baseline (computed and logged on first use); None when its run does not
    say what it was trained on, in which case drift cannot be measured for it."""
    client = mlflow_client(cfg)
    mv = get_version(client, cfg, version)
    if mv is None:
        rep.warn(f"monitor: {cfg.registry.model_name} v{version} is not in the registry: no drift baseline")
        return None
    lineage = version_lineage(client, mv)
    frame = None
    if lineage.run_id:
        with tempfile.TemporaryDirectory(prefix="p300-baseline-") as tmp:
            try:
                frame = pd.read_parquet(client.download_artifacts(lineage.run_id, ARTIFACT, tmp))
            except Exception:  # noqa: BLE001 - not logged yet (MLflow raises several kinds here)
                frame = None
    if frame is None:
        if not lineage.training_subjects or lineage.features_version is None:
            rep.warn(f"monitor: v{version}'s run records no training subjects or features version: no drift baseline")
            return None
        with rep.stage(f"monitor: baseline of v{version} ({len(lineage.training_subjects)} training subjects)"):
            frame = _compute(spark, cfg, version, lineage.training_subjects, lineage.features_version)
        if lineage.run_id:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / Path(ARTIFACT).name
                frame.to_parquet(path)
                client.log_artifact(lineage.run_id, str(path), str(Path(ARTIFACT).parent))
    rms_cols = sorted((c for c in frame.columns if c.startswith("rms_")), key=lambda c: int(c[4:]))
    auc = lineage.metrics.get("cv_roc_auc")
    return Baseline(frame["score"].to_numpy(), frame[rms_cols].to_numpy(), float(auc) if auc is not None else None)
