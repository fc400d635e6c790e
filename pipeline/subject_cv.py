"""Cross-validation over subjects, with scikit-learn's splitters and loops.

Whole subjects are left out of every fit, as the model will meet new subjects:
``GroupKFold`` + ``cross_val_predict`` for the training run's out-of-fold scores, and
``LeaveOneGroupOut`` + ``cross_validate`` for the comparison of candidates, where each
fold's test part is exactly one subject, scored under two protocols:

- ``trialwise`` (source-only): no adaptation to the subject; every epoch is scored on its
  own (the fitted pipeline is stateless per epoch), as a stateless endpoint sees it;
- ``calibration`` (unlabelled calibration): the first ``calibration_fraction`` of the
  subject's epochs, in recording order and without labels, give its reference (for
  pipelines that re-centre); the rest are scored.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, cross_val_predict, cross_validate

from pipeline.classifiers import (TARGET, Candidate, build_classifier, calibration_reference, fit_params,
                                  is_target, predict_proba_with_reference)
from pipeline.metrics import roc_auc, subject_summary

__all__ = ["PROTOCOLS", "CVResult", "Comparison", "scores", "group_cv", "calibration_split", "ProtocolScorer",
           "compare_candidates", "default_n_jobs"]

PROTOCOLS = ("trialwise", "calibration")


def default_n_jobs(n_splits: int, requested: int | None = None) -> int:
    """Folds in parallel up to the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n_splits, requested or cores))


def scores(y: np.ndarray, proba: np.ndarray, pred: np.ndarray, target: int) -> dict[str, float]:
    return {
        "roc_auc": roc_auc(y == target, proba),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "f1_target": float(f1_score(y, pred, pos_label=target, zero_division=0.0)),
    }


@dataclass
class CVResult:
    scheme: str
    n_splits: int
    oof_proba: np.ndarray  # out-of-fold Target probability per row
    oof_pred: np.ndarray  # out-of-fold predicted label per row
    metrics: dict[str, float]
    folds: list[dict[str, Any]] = field(default_factory=list)


def group_cv(pipeline: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, target: int,
             nontarget: int, n_jobs: int | None = None) -> CVResult:
    """Subject-grouped CV: pooled out-of-fold scores give the headline metrics, per-fold ones
    their spread. ValueError when a fold's training part has one class only."""
    n_groups = len(np.unique(groups))
    n_splits = min(folds, n_groups)
    scheme = "leave-one-subject-out" if n_splits == n_groups else f"group-{n_splits}-fold"
    splits = list(GroupKFold(n_splits=n_splits).split(X, y, groups))
    for k, (tr, _) in enumerate(splits):
        if len(np.unique(y[tr])) < 2:
            raise ValueError(f"cross-validation fold {k}: the training part has one class only")
    proba = cross_val_predict(pipeline, X, is_target(y, target), groups=groups, cv=splits, method="predict_proba",
                              params=fit_params(pipeline, groups), n_jobs=default_n_jobs(n_splits, n_jobs))[:, TARGET]
    pred = np.where(proba >= 0.5, target, nontarget).astype(np.int64)
    per_fold = [{"fold": k, "test_subjects": sorted(int(s) for s in np.unique(groups[te])),
                 **scores(y[te], proba[te], pred[te], target)} for k, (_, te) in enumerate(splits)]
    metrics = {f"cv_{k}": v for k, v in scores(y, proba, pred, target).items()}
    fold_auc = np.array([f["roc_auc"] for f in per_fold], dtype=float)
    if np.isfinite(fold_auc).any():
        metrics["cv_roc_auc_fold_mean"] = float(np.nanmean(fold_auc))
        metrics["cv_roc_auc_fold_std"] = float(np.nanstd(fold_auc))
    return CVResult(scheme=scheme, n_splits=n_splits, oof_proba=proba, oof_pred=pred, metrics=metrics,
                    folds=per_fold)


def calibration_split(n_epochs: int, fraction: float) -> int:
    """Epochs in the calibration block: at least one, and at least one left to score."""
    return int(min(max(1, round(n_epochs * fraction)), n_epochs - 1))


class ProtocolScorer:
    """A scorer for ``cross_validate``: ROC AUC on one left-out subject under a protocol.
    Relies on the test fold being one subject in epoch order (LeaveOneGroupOut over rows
    sorted by subject and epoch)."""

    def __init__(self, protocol: str, calibration_fraction: float = 0.2):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
        self.protocol, self.calibration_fraction = protocol, calibration_fraction

    def __call__(self, estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
        """``y``: is-Target (1) or not (0), as the pipelines learn it."""
        col = list(estimator.classes_).index(TARGET)
        if self.protocol == "trialwise":
            return roc_auc(y == TARGET, estimator.predict_proba(X)[:, col])
        n_cal = calibration_split(len(X), self.calibration_fraction)
        reference = calibration_reference(estimator, X[:n_cal])
        proba = predict_proba_with_reference(estimator, X[n_cal:], reference)[:, col]
        return roc_auc(y[n_cal:] == TARGET, proba)


@dataclass
class Comparison:
    per_subject: pd.DataFrame  # subject, candidate, protocol, roc_auc, fit_seconds
    summary: pd.DataFrame  # candidate, protocol, roc_auc_subject_mean, roc_auc_subject_min, fit_seconds
    ranked_by: str  # the protocol the ranking uses
    winner: str
    seconds: float


def compare_candidates(
    candidates: list[Candidate], X: np.ndarray, y: np.ndarray, groups: np.ndarray, n_times: int, target: int,
    calibration_fraction: float = 0.2, rank_protocol: str = "trialwise", n_jobs: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Comparison:
    """Leave-one-subject-out, every candidate on the same folds; the winner has the best mean
    per-subject ROC AUC under ``rank_protocol`` (ties: the higher minimum, then list order)."""
    subjects = np.unique(groups)
    if len(subjects) < 3:
        raise ValueError(f"a leave-one-subject-out comparison needs at least 3 subjects, got {len(subjects)}")
    scoring = {p: ProtocolScorer(p, calibration_fraction) for p in PROTOCOLS}
    y01 = is_target(y, target)
    rows = []
    t_all = time.perf_counter()
    for i, cand in enumerate(candidates):
        if progress:
            progress(i, len(candidates), cand.name)
        pipe = build_classifier(cand.classifier, n_times, cand.alignment)
        res = cross_validate(pipe, X, y01, groups=groups, cv=LeaveOneGroupOut(), scoring=scoring,
                             params=fit_params(pipe, groups), n_jobs=default_n_jobs(len(subjects), n_jobs),
                             error_score="raise")
        for k, subject in enumerate(subjects):  # LeaveOneGroupOut yields subjects in sorted order
            for p in PROTOCOLS:
                rows.append({"subject": int(subject), "candidate": cand.name, "protocol": p,
                             "roc_auc": float(res[f"test_{p}"][k]), "fit_seconds": float(res["fit_time"][k])})
    if progress:
        progress(len(candidates), len(candidates), "done")
    per_subject = pd.DataFrame(rows)
    summary_rows = []
    for (name, p), part in per_subject.groupby(["candidate", "protocol"], sort=False):
        stats = subject_summary(dict(zip(part["subject"], part["roc_auc"])))
        summary_rows.append({"candidate": name, "protocol": p, **stats, "fit_seconds": float(part["fit_seconds"].mean())})
    summary = pd.DataFrame(summary_rows)
    ranked = summary[summary["protocol"] == rank_protocol].copy()
    ranked["order"] = range(len(ranked))
    best = ranked.sort_values(["roc_auc_subject_mean", "roc_auc_subject_min", "order"],
                              ascending=[False, False, True]).iloc[0]
    return Comparison(per_subject, summary, rank_protocol, str(best["candidate"]), time.perf_counter() - t_all)
