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

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyspark.sql import SparkSession

from pipeline import registry as reg
from pipeline.classifiers import build_classifier, fit_params, is_target
from pipeline.config import Config
from pipeline.faults import kill_point
from pipeline.model import P300Model
from pipeline.report import Reporter
from pipeline.subject_cv import group_cv, scores
from pipeline.tables import FEATURES, FeaturesData, feature_subjects, load_features
from pipeline.training_run import Fitted, fingerprint, log_and_register, subject_ranges

__all__ = ["TrainingRefused", "TrainResult", "select_subjects", "check_training_data", "fit", "train", "main"]

_ranges = subject_ranges


class TrainingRefused(Exception):
    """Training cannot go ahead; nothing was logged or registered. ``exit_code`` 2 when the
    arguments name what does not exist or too little, 1 when the data is not enough."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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


# ---- checks ----------------------------------------------------------------------------

def check_training_data(data: FeaturesData, cfg: Config) -> None:
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


# ---- fitting (no MLflow) --------------------------------------------------------------

def fit(cfg: Config, data: FeaturesData, rep: Reporter) -> Fitted:
    """Cross-validate over subjects, then fit the configured pipeline on all of them."""
    t = cfg.training
    target, nontarget = cfg.signal.event_ids.target, cfg.signal.event_ids.nontarget
    pipeline = build_classifier(t.classifier, cfg.preprocess.n_times, t.alignment)
    name = t.classifier + ("" if t.alignment == "none" else f"+{t.alignment}")
    with rep.stage(f"cross-validating {name} over subjects"):
        t0 = time.perf_counter()
        try:
            cv = group_cv(pipeline, data.X, data.y, data.groups, t.cv_folds, target, nontarget, t.n_jobs)
        except ValueError as exc:
            raise TrainingRefused(str(exc)) from None
        cv_seconds = time.perf_counter() - t0
    rep.info(f"{cv.scheme}: ROC AUC {cv.metrics['cv_roc_auc']:.3f}, balanced accuracy "
             f"{cv.metrics['cv_balanced_accuracy']:.3f}, F1 Target {cv.metrics['cv_f1_target']:.3f}")
    with rep.stage("fitting the final model on all training subjects"):
        t0 = time.perf_counter()
        pipeline.fit(data.X, is_target(data.y, target), **fit_params(pipeline, data.groups))
        fit_seconds = time.perf_counter() - t0
    model = P300Model(pipeline, data.X.shape[1], target_label=target, nontarget_label=nontarget,
                      classifier=t.classifier)
    proba, pred = model.predict_matrix(data.X)
    train_scores = {f"train_{k}": v for k, v in scores(data.y, proba, pred, target).items()}
    return Fitted(model, cv, {**cv.metrics, **train_scores, "cv_seconds": cv_seconds, "fit_seconds": fit_seconds})


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
    target = cfg.signal.event_ids.target
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
        try:
            data = load_features(spark, cfg, chosen, version)
        except ValueError as exc:
            raise TrainingRefused(str(exc)) from None
        check_training_data(data, cfg)
    n, n_features = data.X.shape
    n_target = int((data.y == target).sum())
    rep.info(f"{n} epochs x {n_features} features ({data.X.nbytes / 2**20:.1f} MiB float32), "
             f"{n_target} Target / {n - n_target} NonTarget")
    fitted = fit(cfg, data, rep)
    with rep.stage(f"logging to MLflow experiment {cfg.registry.experiment!r} and registering "
                   f"{cfg.registry.model_name!r}"):
        mv_version, run_id = log_and_register(client, cfg, data, fitted, fp)
    kill_point(cfg, "train.after_register")  # registered with its tags, alias not yet set
    alias_set = stage_set = False
    if alias:
        try:
            reg.set_alias(client, cfg, reg.CHALLENGER, mv_version)
        except Exception:  # registered with its fingerprint: a rerun finds this version and sets the alias
            rep.warn(f"version {mv_version} is registered but alias {reg.CHALLENGER} was not set; run "
                     "`p300 train` again with the same arguments to finish (it reuses the version)")
            raise
        alias_set = True
        stage_set = reg.set_stage(client, cfg, mv_version, "Staging")
    return TrainResult(version=mv_version, run_id=run_id, subjects=chosen, features_version=version,
                       metrics=fitted.metrics, alias_set=alias_set, stage_set=stage_set,
                       aliases=[reg.CHALLENGER] if alias_set else [])


def main(cfg: Config, args: Any, rep: Reporter) -> int:
    """`p300 train [--train-fraction F | --subjects ..] [--no-alias] [--force]`."""
    from pipeline.spark import get_spark

    subjects = getattr(args, "subjects", None)
    fraction = getattr(args, "train_fraction", None) or cfg.training.train_fraction
    if getattr(args, "classifier", None):
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"classifier": args.classifier})})
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
