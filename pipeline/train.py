"""`p300 train`: fit the classifier on the driver, track it in MLflow, register it.

Reads the features table at one Delta version (recorded, and read at exactly that
version), selects the training subjects, and brings their epochs to the driver as one
float32 matrix through Arrow (``DataFrame.toArrow``: columnar batches, no Python Rows).
Subject-grouped cross-validation (whole subjects left out, as the model will meet new
subjects) measures ROC AUC, balanced accuracy and F1 for Target; the final model is
fitted on all selected subjects, logged with its signature, input example, plots and
lineage, registered, and given alias ``challenger`` (stage Staging where the registry
has stages).

Refusals (too few subjects, one class only, unknown subject ids, features that do not
match the configuration) happen before anything touches MLflow, so they register
nothing. A rerun on the same table version, subjects and training settings finds the
version it registered before (tag ``p300.fingerprint``) and does not train again.
"""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import GroupKFold

from pipeline import registry as reg
from pipeline.config import Config
from pipeline.model import P300Model, build_estimator, model_signature
from pipeline.model_code import model_code_paths
from pipeline.report import Reporter

__all__ = [
    "TrainingRefused",
    "TrainingData",
    "CVResult",
    "TrainResult",
    "select_subjects",
    "feature_subjects",
    "arrow_to_arrays",
    "load_features",
    "cross_validate",
    "fingerprint",
    "flatten_config",
    "train",
    "main",
]

FEATURES = "features"


class TrainingRefused(Exception):
    """Training cannot go ahead; nothing was logged or registered. ``exit_code`` 2 when the
    arguments name what does not exist or too little, 1 when the data is not enough."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class TrainingData:
    X: np.ndarray  # float32 (n_epochs, n_features), C-contiguous
    y: np.ndarray  # int64 labels (event ids)
    groups: np.ndarray  # int64 subject id per row
    epoch_idx: np.ndarray  # int64 epoch index per row
    table: str
    table_version: int

    @property
    def subjects(self) -> list[int]:
        return [int(s) for s in np.unique(self.groups)]


@dataclass
class CVResult:
    scheme: str
    n_splits: int
    oof_proba: np.ndarray  # out-of-fold Target probability per row
    oof_pred: np.ndarray  # out-of-fold predicted label per row
    metrics: dict[str, float]
    folds: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    version: str
    run_id: str
    subjects: list[int]
    features_version: int
    metrics: dict[str, float]
    reused: bool = False
    alias_set: bool = False  # this call moved alias challenger to the version
    stage_set: bool = False  # this call moved the version to stage Staging
    aliases: list[str] = field(default_factory=list)  # the version's aliases afterwards


# ---- subject selection (pure) ---------------------------------------------------------

def _ranges(ids: list[int]) -> str:
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


def select_subjects(
    available: list[int],
    requested: list[int] | None = None,
    fraction: float | None = None,
    min_subjects: int = 2,
) -> list[int]:
    """Explicit ids (all must exist), else the first ceil(fraction x n) ids in order."""
    available = sorted(set(int(s) for s in available))
    needed = max(min_subjects, 2)  # subject-grouped cross-validation needs two subjects
    why = f"training needs at least {needed} subjects (training.min_subjects={min_subjects}; " \
          "subject-grouped cross-validation needs 2)"
    if not available:
        raise TrainingRefused("the features table has no subjects: run `p300 ingest` and `p300 preprocess` first")
    if requested is not None:
        unknown = sorted(set(requested) - set(available))
        if unknown:
            raise TrainingRefused(
                f"unknown subject ids {_ranges(unknown)}: not in the features table "
                f"(processed subjects: {_ranges(available)})", exit_code=2)
        chosen = sorted(set(int(s) for s in requested))
        if len(chosen) < needed:
            raise TrainingRefused(f"--subjects gives {len(chosen)} subject(s); {why}", exit_code=2)
        return chosen
    if fraction is None or not 0 < fraction <= 1:
        raise TrainingRefused(f"train fraction must be in (0, 1], got {fraction}", exit_code=2)
    if len(available) < needed:
        raise TrainingRefused(
            f"only {len(available)} processed subject(s) ({_ranges(available)}); {why}: "
            "ingest and preprocess more subjects")
    count = math.ceil(round(fraction * len(available), 9))  # 0.3 x 10 is 3, not 4
    if count < needed:
        raise TrainingRefused(
            f"train fraction {fraction:g} of {len(available)} processed subjects selects {count}; {why}: "
            "raise --train-fraction or add subjects")
    return available[:count]


# ---- features to the driver (Arrow) ---------------------------------------------------

def feature_subjects(spark: SparkSession, cfg: Config, version: int) -> list[int]:
    """Subject ids present in the features table at ``version`` (partition values: cheap)."""
    from pipeline.storage import read_table

    rows = read_table(spark, cfg, FEATURES, version=version).select("subject_id").distinct().collect()
    return sorted(int(r[0]) for r in rows)


def arrow_to_arrays(table: pa.Table, n_features: int | None = None) -> tuple[np.ndarray, ...]:
    """(X float32 (n, f), label, subject_id, epoch_idx) from an Arrow table of the features
    schema. Fills one preallocated matrix chunk by chunk from the list column's flat values,
    so the only other copy alive is the Arrow table itself."""
    n = table.num_rows
    col = table.column("features")
    if col.null_count:
        raise ValueError(f"features table: {col.null_count} epoch(s) have a null feature vector")
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
            raise ValueError(
                f"features table: vectors of different lengths ({lo.as_py()}..{hi.as_py()}, expected {n_features}); "
                "reprocess the subjects with one configuration")
        flat = chunk.flatten()
        if flat.null_count:
            raise ValueError("features table: feature vectors contain nulls")
        X[row:row + len(chunk)] = flat.to_numpy(zero_copy_only=False).reshape(len(chunk), n_features)
        row += len(chunk)

    def ints(name: str) -> np.ndarray:
        return table.column(name).to_numpy().astype(np.int64, copy=False)

    return X, ints("label"), ints("subject_id"), ints("epoch_idx")


def load_features(spark: SparkSession, cfg: Config, subjects: list[int], version: int) -> TrainingData:
    """The selected subjects' epochs at one table version, ordered by (subject, epoch)."""
    from pipeline.storage import read_table

    frame = (read_table(spark, cfg, FEATURES, version=version)
             .where(F.col("subject_id").isin([int(s) for s in subjects]))
             .select(F.col("subject_id").cast("int"), F.col("epoch_idx").cast("int"),
                     F.col("label").cast("int"), F.col("features").cast("array<float>"))
             .orderBy("subject_id", "epoch_idx"))
    table = frame.toArrow()
    try:
        X, y, groups, epochs = arrow_to_arrays(table)
    except ValueError as exc:
        raise TrainingRefused(f"{cfg.table(FEATURES)} version {version}: {exc}") from None
    del table
    order = np.lexsort((epochs, groups))
    if np.any(order != np.arange(len(order))):  # toArrow keeps Spark's order; this is a guard
        X, y, groups, epochs = X[order], y[order], groups[order], epochs[order]
    return TrainingData(X=X, y=y, groups=groups, epoch_idx=epochs, table=cfg.table(FEATURES), table_version=version)


def check_training_data(data: TrainingData, cfg: Config) -> None:
    """Refuse data the model cannot learn from or that does not match the configuration."""
    target, nontarget = cfg.signal.event_ids.target, cfg.signal.event_ids.nontarget
    if len(data.y) == 0:
        raise TrainingRefused("the selected subjects have no epochs")
    labels = set(int(v) for v in np.unique(data.y))
    other = labels - {target, nontarget}
    if other:
        raise TrainingRefused(
            f"labels {sorted(other)} in the features table are neither Target ({target}) nor NonTarget ({nontarget})")
    if len(labels) < 2:
        only = "Target" if labels == {target} else "NonTarget"
        raise TrainingRefused(
            f"subjects {_ranges(data.subjects)} have {only} epochs only (label {labels.pop()}): "
            "a classifier needs both Target and NonTarget epochs")
    n_times = cfg.preprocess.n_times
    if data.X.shape[1] % n_times:
        raise TrainingRefused(
            f"feature vectors have {data.X.shape[1]} values, not a multiple of preprocess.n_times={n_times}: "
            "the table was built with another preprocess configuration; reprocess (p300 preprocess --reprocess)")


# ---- cross-validation (pure) ----------------------------------------------------------

def _scores(y: np.ndarray, proba: np.ndarray, pred: np.ndarray, target: int) -> dict[str, float]:
    is_target = y == target
    auc = float(roc_auc_score(is_target, proba)) if 0 < is_target.sum() < len(y) else float("nan")
    return {
        "roc_auc": auc,
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "f1_target": float(f1_score(y, pred, pos_label=target, zero_division=0.0)),
    }


def cross_validate(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, model: str = "shrinkage_lda", folds: int = 5,
    target: int = 2, nontarget: int = 1,
) -> CVResult:
    """Leave-subjects-out CV: each fold's test subjects are unseen in its training part.
    Pooled out-of-fold scores give the headline metrics; per-fold ones their spread."""
    n_groups = len(np.unique(groups))
    n_splits = min(folds, n_groups)
    scheme = "leave-one-subject-out" if n_splits == n_groups else f"group-{n_splits}-fold"
    proba = np.full(len(y), np.nan)
    per_fold = []
    for k, (tr, te) in enumerate(GroupKFold(n_splits=n_splits).split(X, y, groups)):
        est = build_estimator(model)
        if len(np.unique(y[tr])) < 2:
            raise TrainingRefused(f"cross-validation fold {k}: the training part has one class only")
        est.fit(X[tr], y[tr])
        col = list(est.classes_).index(target)
        proba[te] = est.predict_proba(X[te])[:, col]
        pred = np.where(proba[te] >= 0.5, target, nontarget)
        per_fold.append({"fold": k, "test_subjects": sorted(int(s) for s in np.unique(groups[te])),
                         **_scores(y[te], proba[te], pred, target)})
    oof_pred = np.where(proba >= 0.5, target, nontarget).astype(np.int64)
    metrics = {f"cv_{k}": v for k, v in _scores(y, proba, oof_pred, target).items()}
    fold_auc = np.array([f["roc_auc"] for f in per_fold], dtype=float)
    if np.isfinite(fold_auc).any():
        metrics["cv_roc_auc_fold_mean"] = float(np.nanmean(fold_auc))
        metrics["cv_roc_auc_fold_std"] = float(np.nanstd(fold_auc))
    return CVResult(scheme=scheme, n_splits=n_splits, oof_proba=proba, oof_pred=oof_pred, metrics=metrics,
                    folds=per_fold)


# ---- lineage and params ---------------------------------------------------------------

_SECRET_WORDS = ("token", "password", "secret")


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
        "training": cfg.training.model_dump(mode="json", exclude={"train_fraction", "min_subjects"}),
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


def _figures(cfg: Config, data: TrainingData, cv: CVResult) -> Iterator[tuple[str, Any]]:
    from pipeline import plots

    target, nontarget = cfg.signal.event_ids.target, cfg.signal.event_ids.nontarget
    n_times = cfg.preprocess.n_times
    idx, channel = _erp_channel(cfg, data.X.shape[1] // n_times, data.X, data.y)
    tm, ts, nm, ns = plots.grand_average(data.X, data.y, n_times, idx, target, nontarget)
    times = cfg.preprocess.tmin + np.arange(n_times) / cfg.preprocess.resample_hz
    yield "plots/erp_target_vs_nontarget.png", plots.erp_figure(
        times, tm, nm, channel, ts, ns, int((data.y == target).sum()), int((data.y == nontarget).sum()),
        title=f"Grand-average ERP at {channel}, subjects {_ranges(data.subjects)}")
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
    import cloudpickle
    import mlflow
    import pandas
    import sklearn

    return [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}",
            f"numpy=={np.__version__}", f"pandas=={pandas.__version__}", f"cloudpickle=={cloudpickle.__version__}"]


# ---- the job --------------------------------------------------------------------------

def _reuse(client: Any, cfg: Config, fp: str, alias: bool, rep: Reporter) -> TrainResult | None:
    """A version registered earlier from the same inputs, aliased as a fresh one would be."""
    mv = reg.find_version_by_tag(client, cfg, reg.TAG_FINGERPRINT, fp)
    if mv is None:
        return None
    lineage = reg.version_lineage(client, mv)
    alias_set = stage_set = False
    if not alias:
        pass
    elif reg.CHAMPION in lineage.aliases:
        rep.info(f"version {mv.version} already holds this training and is the champion; challenger left as is")
    elif reg.CHALLENGER not in lineage.aliases:
        reg.set_alias(client, cfg, reg.CHALLENGER, mv.version)
        stage_set = reg.set_stage(client, cfg, mv.version, "Staging")
        alias_set = True
    aliases = sorted(set(lineage.aliases) | ({reg.CHALLENGER} if alias_set else set()))
    return TrainResult(version=str(mv.version), run_id=mv.run_id, subjects=lineage.training_subjects,
                       features_version=int(lineage.features_version or 0), metrics=lineage.metrics, reused=True,
                       alias_set=alias_set, stage_set=stage_set, aliases=aliases)


def train(
    spark: SparkSession,
    cfg: Config,
    subjects: list[int] | None = None,
    fraction: float | None = None,
    alias: bool = True,
    force: bool = False,
    rep: Reporter | None = None,
) -> TrainResult:
    """Select, load, cross-validate, fit, log, register; raises TrainingRefused before any
    MLflow write when the inputs cannot give a model."""
    from pipeline.storage import table_version

    rep = rep or Reporter(quiet=True)
    target, nontarget = cfg.signal.event_ids.target, cfg.signal.event_ids.nontarget
    version = table_version(spark, cfg, FEATURES)
    if version is None:
        raise TrainingRefused(f"features table {cfg.table(FEATURES)} does not exist: "
                              "run `p300 ingest` and `p300 preprocess` first")
    available = feature_subjects(spark, cfg, version)
    chosen = select_subjects(available, subjects, fraction if subjects is None else None,
                             cfg.training.min_subjects)
    rest = [s for s in available if s not in chosen]
    rep.info(f"features {cfg.table(FEATURES)} @ version {version}: {len(available)} processed subjects; "
             f"training on {_ranges(chosen)}, {len(rest)} left for evaluation ({_ranges(rest)})")
    if not rest:
        rep.warn("no processed subject is left out of training: `p300 evaluate` will have no holdout")

    client = reg.mlflow_client(cfg)
    fp = fingerprint(cfg, cfg.table(FEATURES), version, chosen)
    if not force:
        reused = _reuse(client, cfg, fp, alias, rep)
        if reused is not None:
            rep.info(f"version {reused.version} was trained from these inputs before (run {reused.run_id}); "
                     "not training again (--force to retrain)")
            return reused

    with rep.stage(f"loading {len(chosen)} subjects' features through Arrow"):
        data = load_features(spark, cfg, chosen, version)
        check_training_data(data, cfg)
    n, n_features = data.X.shape
    n_target = int((data.y == target).sum())
    rep.info(f"{n} epochs x {n_features} features ({data.X.nbytes / 2**20:.1f} MiB float32), "
             f"{n_target} Target / {n - n_target} NonTarget")

    with rep.stage(f"cross-validating {cfg.training.model} over subjects"):
        t0 = time.perf_counter()
        cv = cross_validate(data.X, data.y, data.groups, cfg.training.model, cfg.training.cv_folds, target, nontarget)
        cv_seconds = time.perf_counter() - t0
    rep.info(f"{cv.scheme}: ROC AUC {cv.metrics['cv_roc_auc']:.3f}, balanced accuracy "
             f"{cv.metrics['cv_balanced_accuracy']:.3f}, F1 Target {cv.metrics['cv_f1_target']:.3f}")

    with rep.stage("fitting the final model on all training subjects"):
        t0 = time.perf_counter()
        estimator = build_estimator(cfg.training.model).fit(data.X, data.y)
        fit_seconds = time.perf_counter() - t0
    model = P300Model(estimator, n_features, target_label=target, nontarget_label=nontarget)
    train_proba, train_pred = model.predict_matrix(data.X)
    train_scores = {f"train_{k}": v for k, v in _scores(data.y, train_proba, train_pred, target).items()}

    import mlflow

    experiment_id = reg.ensure_experiment(client, cfg, cfg.registry.experiment)
    subjects_text = reg.format_subjects(chosen)
    lineage = {
        reg.PARAM_TRAINING_SUBJECTS: subjects_text,
        reg.PARAM_FEATURES_TABLE: data.table,
        reg.PARAM_FEATURES_VERSION: str(version),
        reg.PARAM_N_FEATURES: str(n_features),
    }
    with rep.stage(f"logging to MLflow experiment {cfg.registry.experiment!r} and registering "
                   f"{cfg.registry.model_name!r}"):
        with mlflow.start_run(experiment_id=experiment_id,
                              run_name=f"train-{_ranges(chosen)}-features-v{version}") as run:
            mlflow.log_params({**flatten_config(cfg), **lineage, "n_subjects": len(chosen), "n_epochs": n,
                               "n_target": n_target, "cv_scheme": cv.scheme, "cv_splits": cv.n_splits})
            mlflow.set_tags({reg.TAG_FINGERPRINT: fp, "p300.job": "train"})
            mlflow.log_input(_dataset(data.table, version, fp), context="training",
                             tags={reg.PARAM_TRAINING_SUBJECTS: subjects_text})
            mlflow.log_metrics({**cv.metrics, **train_scores, "cv_seconds": cv_seconds, "fit_seconds": fit_seconds})
            for fold in cv.folds:
                mlflow.log_metrics({f"fold_{k}": v for k, v in fold.items() if k in ("roc_auc", "balanced_accuracy",
                                                                                      "f1_target")},
                                   step=fold["fold"])
            for path, fig in _figures(cfg, data, cv):
                mlflow.log_figure(fig, path)
            with tempfile.TemporaryDirectory() as tmp:
                doc = {**lineage, "training_subjects": chosen, "features_table_version": version,
                       "cv": {"scheme": cv.scheme, "folds": cv.folds, **cv.metrics}, "fingerprint": fp}
                Path(tmp, "lineage.json").write_text(json.dumps(doc, indent=2))
                Path(tmp, "config.json").write_text(json.dumps(flatten_config(cfg), indent=2, sort_keys=True))
                mlflow.log_artifacts(tmp, "lineage")
            info = mlflow.pyfunc.log_model(
                name="model", python_model=model, code_paths=model_code_paths(), signature=model_signature(n_features),
                input_example=data.X[:3], registered_model_name=cfg.registry.model_name,
                pip_requirements=_pip_requirements())
    mv_version = str(info.registered_model_version)
    for key, value in {**lineage, reg.TAG_FINGERPRINT: fp,
                       "cv_roc_auc": f"{cv.metrics['cv_roc_auc']:.4f}"}.items():
        client.set_model_version_tag(cfg.registry.model_name, mv_version, key, value)
    alias_set = stage_set = False
    if alias:
        reg.set_alias(client, cfg, reg.CHALLENGER, mv_version)
        alias_set = True
        stage_set = reg.set_stage(client, cfg, mv_version, "Staging")
    return TrainResult(version=mv_version, run_id=run.info.run_id, subjects=chosen, features_version=version,
                       metrics={**cv.metrics, **train_scores, "cv_seconds": cv_seconds, "fit_seconds": fit_seconds},
                       alias_set=alias_set, stage_set=stage_set, aliases=[reg.CHALLENGER] if alias_set else [])


def main(cfg: Config, args: Any, rep: Reporter) -> int:
    """`p300 train [--train-fraction F | --subjects ..] [--no-alias] [--force]`."""
    from pipeline.spark import get_spark

    subjects = getattr(args, "subjects", None)
    fraction = getattr(args, "train_fraction", None) or cfg.training.train_fraction
    spark = get_spark(cfg)
    try:
        result = train(spark, cfg, subjects=subjects, fraction=fraction, alias=not getattr(args, "no_alias", False),
                       force=getattr(args, "force", False), rep=rep)
    except TrainingRefused as exc:
        rep.warn(f"train refused, nothing registered: {exc}")
        return exc.exit_code
    name = cfg.registry.model_name
    where = ", ".join([f"alias {a}" for a in result.aliases] + (["stage Staging"] if result.stage_set else [])) \
        or "no alias"
    verb = "already registered" if result.reused else "registered"
    rep.table([[k, result.metrics[k]] for k in ("cv_roc_auc", "cv_balanced_accuracy", "cv_f1_target")
               if k in result.metrics], ["metric", "value"])
    rep.result(f"train: {verb} {name} version {result.version} ({where}); subjects {_ranges(result.subjects)}, "
               f"features version {result.features_version}, run {result.run_id}")
    return 0
