"""The MLflow side of `p300 train`: what a training run logs and how its version is registered.

Kept apart from fitting (pipeline/train.py), so the model can be fitted and checked without
touching MLflow. Registration never leaves half a version: the model is logged to the run
first, then ``mlflow.register_model`` creates the version with its lineage tags in the same
call, so a version without lineage cannot exist; a failure before it leaves the registry as
it was (a rerun trains again), a failure after it is finished by a rerun, which finds the
version by its fingerprint tag and sets the alias.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline import registry as reg
from pipeline.classifiers import classifier_params
from pipeline.config import Config
from pipeline.model import P300Model, model_signature
from pipeline.model_code import model_code_paths
from pipeline.subject_cv import CVResult
from pipeline.tables import FEATURES, FeaturesData

__all__ = ["Fitted", "flatten_config", "fingerprint", "log_and_register", "subject_ranges"]

_SECRET_WORDS = ("token", "password", "secret")
# settings that choose subjects or drive `p300 compare`, not the model a given training makes
_NOT_IN_FINGERPRINT = {"train_fraction", "min_subjects", "candidates", "compare_protocol", "n_jobs",
                       "calibration_fraction"}


@dataclass
class Fitted:
    """A fitted model with its cross-validation, before anything is logged."""

    model: P300Model
    cv: CVResult
    metrics: dict[str, float]  # cv_*, train_*, cv_seconds, fit_seconds


def subject_ranges(ids: list[int]) -> str:
    """[1,2,3,5] -> '1-3,5' for messages."""
    out, ids = [], sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out) or "none"


def flatten_config(cfg: Config) -> dict[str, str]:
    """The full configuration as dotted params (secrets redacted); lists as JSON."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}.", value)
            return
        key = prefix[:-1]
        if any(w in key.rsplit(".", 1)[-1].lower() for w in _SECRET_WORDS) and node is not None:
            out[key] = "***"
        else:
            out[key] = node if isinstance(node, str) else json.dumps(node)

    walk("", cfg.dump())
    return out


def fingerprint(cfg: Config, table: str, table_version: int, subjects: list[int]) -> str:
    """What determines a trained model: the exact features, subjects and training settings."""
    from pipeline import __version__

    payload = {
        "table": table, "table_version": int(table_version), "subjects": sorted(int(s) for s in subjects),
        "training": cfg.training.model_dump(mode="json", exclude=_NOT_IN_FINGERPRINT),
        "event_ids": cfg.signal.event_ids.model_dump(mode="json"), "code": __version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _erp_channel(cfg: Config, n_channels: int, X: np.ndarray, y: np.ndarray) -> tuple[int, str]:
    """Index and name of the configured ERP channel; when the recordings have fewer channels,
    the channel with the largest target/non-target difference (named as such)."""
    name = cfg.signal.erp_channel
    try:
        idx = int(name.removeprefix(cfg.signal.channel_prefix)) - 1
    except ValueError:
        idx = -1
    if 0 <= idx < n_channels:
        return idx, name
    n_times = cfg.preprocess.n_times
    t, nt = y == cfg.signal.event_ids.target, y == cfg.signal.event_ids.nontarget
    diffs = [np.abs(X[t, c * n_times:(c + 1) * n_times].mean(0) - X[nt, c * n_times:(c + 1) * n_times].mean(0)).max()
             for c in range(n_channels)]
    best = int(np.argmax(diffs))
    return best, f"{cfg.signal.channel_prefix}{best + 1} (largest difference; {name} absent)"


def _figures(cfg: Config, data: FeaturesData, cv: CVResult) -> Iterator[tuple[str, Any]]:
    from pipeline import plots

    target, nontarget = cfg.signal.event_ids.target, cfg.signal.event_ids.nontarget
    n_times = cfg.preprocess.n_times
    idx, channel = _erp_channel(cfg, data.X.shape[1] // n_times, data.X, data.y)
    tm, ts, nm, ns = plots.grand_average(data.X, data.y, n_times, idx, target, nontarget)
    times = cfg.preprocess.tmin + np.arange(n_times) / cfg.preprocess.resample_hz
    yield "plots/erp_target_vs_nontarget.png", plots.erp_figure(
        times, tm, nm, channel, ts, ns, int((data.y == target).sum()), int((data.y == nontarget).sum()),
        title=f"Grand-average ERP at {channel}, subjects {subject_ranges(data.subjects)}")
    yield "plots/roc_cv.png", plots.roc_figure(
        data.y, cv.oof_proba, pos_label=target, name=f"cross-validated ({cv.scheme})",
        title="ROC, subject-grouped cross-validation")
    yield "plots/confusion_cv.png", plots.confusion_figure(
        data.y, cv.oof_pred, labels=(nontarget, target), title="Confusion matrix (cross-validated)")


def _dataset(table: str, version: int, digest: str) -> Any:
    """The features table at its version as an MLflow dataset (lineage in the UI); metadata
    only, so nothing is computed on Spark."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    from pipeline.storage import is_catalog_name

    source = (DeltaDatasetSource(delta_table_name=table, delta_table_version=version) if is_catalog_name(table)
              else DeltaDatasetSource(path=table, delta_table_version=version))
    return MetaDataset(source, name=f"{FEATURES}@v{version}", digest=digest[:16])


def _pip_requirements() -> list[str]:
    """Pinned from this environment: no slow requirement inference, same versions when served."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "numpy", "pandas", "cloudpickle", "pyriemann",
                                            "array-api-extra")]


def log_and_register(client: Any, cfg: Config, data: FeaturesData, fitted: Fitted, fp: str) -> tuple[str, str]:
    """One training run (params, metrics, plots, lineage, the model), then the registered
    version with its lineage tags; returns (version, run id)."""
    import mlflow

    cv, n_features = fitted.cv, data.X.shape[1]
    experiment_id = reg.ensure_experiment(client, cfg, cfg.registry.experiment)
    subjects_text = reg.format_subjects(data.subjects)
    lineage = {reg.PARAM_TRAINING_SUBJECTS: subjects_text, reg.PARAM_FEATURES_TABLE: data.table,
               reg.PARAM_FEATURES_VERSION: str(data.table_version), reg.PARAM_N_FEATURES: str(n_features)}
    n_target = int((data.y == cfg.signal.event_ids.target).sum())
    with mlflow.start_run(experiment_id=experiment_id,
                          run_name=f"train-{subject_ranges(data.subjects)}-features-v{data.table_version}") as run:
        mlflow.log_params({**flatten_config(cfg), **lineage, **classifier_params(fitted.model.estimator),
                           "n_subjects": len(data.subjects), "n_epochs": len(data.y), "n_target": n_target,
                           "cv_scheme": cv.scheme, "cv_splits": cv.n_splits})
        mlflow.set_tags({reg.TAG_FINGERPRINT: fp, "p300.job": "train", reg.TAG_CLASSIFIER: fitted.model.classifier,
                         reg.TAG_ALIGNMENT: fitted.model.alignment})
        mlflow.log_input(_dataset(data.table, data.table_version, fp), context="training",
                         tags={reg.PARAM_TRAINING_SUBJECTS: subjects_text})
        mlflow.log_metrics(fitted.metrics)
        for fold in cv.folds:
            mlflow.log_metrics({f"fold_{k}": v for k, v in fold.items()
                                if k in ("roc_auc", "balanced_accuracy", "f1_target")}, step=fold["fold"])
        for path, fig in _figures(cfg, data, cv):
            mlflow.log_figure(fig, path)
        with tempfile.TemporaryDirectory() as tmp:
            doc = {**lineage, "training_subjects": data.subjects, "features_table_version": data.table_version,
                   "cv": {"scheme": cv.scheme, "folds": cv.folds, **cv.metrics}, "fingerprint": fp}
            Path(tmp, "lineage.json").write_text(json.dumps(doc, indent=2))
            Path(tmp, "config.json").write_text(json.dumps(flatten_config(cfg), indent=2, sort_keys=True))
            mlflow.log_artifacts(tmp, "lineage")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=fitted.model, code_paths=model_code_paths(), signature=model_signature(n_features),
            input_example=data.X[:3], pip_requirements=_pip_requirements())
    tags = {**lineage, reg.TAG_FINGERPRINT: fp, reg.TAG_CLASSIFIER: fitted.model.classifier,
            reg.TAG_ALIGNMENT: fitted.model.alignment, "cv_roc_auc": f"{cv.metrics['cv_roc_auc']:.4f}"}
    mv = reg.register_model(cfg, info.model_uri, tags)
    return str(mv.version), run.info.run_id
