"""Scores shared by training, comparison and evaluation: ROC AUC guarded against one-class
data, and the per-subject view (every model here is judged on subjects it never saw, so
the mean and the worst subject matter beside the pooled number)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = ["roc_auc", "per_subject_auc", "subject_summary"]


def roc_auc(is_target: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of Target (a boolean or 0/1 array) against ``score``; NaN where only one class
    is present, where the AUC is undefined."""
    is_target = np.asarray(is_target).astype(bool)
    n_pos = int(is_target.sum())
    return float(roc_auc_score(is_target, score)) if 0 < n_pos < len(is_target) else float("nan")


def per_subject_auc(groups: np.ndarray, is_target: np.ndarray, score: np.ndarray) -> dict[int, float]:
    """{subject id: ROC AUC on that subject's epochs}."""
    groups = np.asarray(groups)
    return {int(s): roc_auc(is_target[groups == s], score[groups == s]) for s in np.unique(groups)}


def subject_summary(per_subject: dict[int, float], prefix: str = "roc_auc_subject") -> dict[str, float]:
    """``{prefix}_mean`` and ``{prefix}_min`` over the subjects whose AUC is defined."""
    values = np.array([v for v in per_subject.values() if np.isfinite(v)], dtype=float)
    if not len(values):
        return {}
    return {f"{prefix}_mean": float(values.mean()), f"{prefix}_min": float(values.min())}
