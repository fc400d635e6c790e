"""Per-window profile and drift rows from per-epoch data (pandas only: pure and testable).

The monitor job hands in one frame of scored epochs for the windows it processes (tiny
next to the log itself: a score, a label and a few channel RMS values per epoch) and the
request-level counts; this module computes what Lakehouse Monitoring would put in its
profile-metrics and drift-metrics tables, plus the flat per-window metrics that the
retraining rule and the plots read.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from pipeline.monitor_tables import SLICE_KEY, TABLE_COLUMN
from udfs.drift import ks_test, psi, quantiles, wasserstein

__all__ = ["Baseline", "window_rows", "window_metrics", "METRICS", "WINDOW_KEYS"]

WINDOW_KEYS = ["window_start", "model_name", "model_version", "served_entity"]
METRICS = ("request_count", "epoch_count", "error_rate", "latency_p50_ms", "latency_p99_ms", "predicted_target_rate",
           "score_mean", "roc_auc", "balanced_accuracy", "roc_auc_drop", "score_psi", "score_ks",
           "score_wasserstein", "rms_psi_max")


@dataclass
class Baseline:
    """What a model version saw in training: its scores and per-channel RMS per epoch."""

    scores: np.ndarray
    rms: np.ndarray  # (n_epochs, n_channels)
    roc_auc: float | None = None  # the version's cross-validated ROC AUC


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None)


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def _bal_acc(y: np.ndarray, pred: np.ndarray) -> float | None:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, pred)) if len(y) else None


def _column_stats(values: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return {"count": 0}
    return {"count": int(v.size), "mean": float(v.mean()), "stddev": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "quantiles": quantiles(v)}


def _drift(expected: np.ndarray, actual: np.ndarray, bins: int) -> dict[str, Any]:
    stat, pvalue = ks_test(expected, actual)
    return {"count": int(len(actual)), "baseline_count": int(len(expected)),
            "ks_test": {"statistic": stat, "pvalue": pvalue}, "wasserstein_distance": wasserstein(expected, actual),
            "population_stability_index": psi(expected, actual, bins),
            "mean_delta": float(np.mean(actual) - np.mean(expected)) if len(actual) and len(expected) else None}


def window_rows(key: dict[str, Any], requests: dict[str, Any], epochs: pd.DataFrame, baseline: Baseline | None,
                target_label: int, window_s: int, psi_bins: int, run_id: str,
                channel_names: list[str]) -> tuple[list[dict], list[dict]]:
    """(profile rows, drift rows) of one window and served model.

    ``requests``: count, errors, latency_p50/p95/p99_ms. ``epochs``: score, predicted,
    rms (per-channel array; None outside the input sample) and label (NaN where unknown) of
    the window's answered epochs."""
    start = int(key["window_start"])
    common = {"window": {"start": _ts(start), "end": _ts(start + window_s * 1000)}, "granularity": f"{window_s} seconds",
              "model_id": f"{key['model_name']}/{key['model_version']}", "model_name": key["model_name"],
              "model_version": key["model_version"], "slice_key": SLICE_KEY, "slice_value": key["served_entity"],
              "computed_at": datetime.now(timezone.utc).replace(tzinfo=None), "monitor_run_id": run_id}
    scores = epochs["score"].to_numpy(dtype=np.float64)
    predicted = epochs["predicted"].to_numpy()
    labeled = epochs[epochs["label"].notna()]
    y = (labeled["label"].to_numpy() == target_label).astype(int)
    auc = _auc(y, labeled["score"].to_numpy()) if len(labeled) else None
    n = int(requests["count"])
    table = {**common, "column_name": TABLE_COLUMN, "log_type": "INPUT", "count": n, "epoch_count": int(len(epochs)),
             "error_rate": float(requests["errors"]) / n if n else None,
             "latency_p50_ms": requests.get("latency_p50_ms"), "latency_p95_ms": requests.get("latency_p95_ms"),
             "latency_p99_ms": requests.get("latency_p99_ms"),
             "predicted_target_rate": float(np.mean(predicted == target_label)) if len(predicted) else None,
             "labeled_count": int(len(labeled)), "roc_auc": auc,
             "balanced_accuracy": _bal_acc(y, (labeled["predicted"].to_numpy() == target_label).astype(int))
             if len(labeled) else None}
    profile = [table, {**common, "column_name": "score", "log_type": "INPUT", **_column_stats(scores)}]
    drift: list[dict] = []
    sampled = epochs["rms"].dropna().to_numpy() if len(epochs) else []  # None: not in the input sample
    rms = np.stack(sampled) if len(sampled) else np.empty((0, len(channel_names)))
    for i, name in enumerate(channel_names):
        if i < rms.shape[1]:
            profile.append({**common, "column_name": f"rms_{name}", "log_type": "INPUT", **_column_stats(rms[:, i])})
    if baseline is not None:
        drift.append({**common, "column_name": "score", "drift_type": "BASELINE", **_drift(baseline.scores, scores, psi_bins)})
        for i, name in enumerate(channel_names):
            if i < rms.shape[1] and i < baseline.rms.shape[1]:
                drift.append({**common, "column_name": f"rms_{name}", "drift_type": "BASELINE",
                              **_drift(baseline.rms[:, i], rms[:, i], psi_bins)})
        if auc is not None and baseline.roc_auc is not None:
            drift.append({**common, "column_name": TABLE_COLUMN, "drift_type": "BASELINE", "count": int(len(labeled)),
                          "mean_delta": auc - baseline.roc_auc})
    return profile, drift


def window_metrics(profile: pd.DataFrame, drift: pd.DataFrame) -> pd.DataFrame:
    """One row per (window_start, model_id, served_entity) with the flat METRICS, oldest first."""
    keys = ["window_start", "model_id", "served_entity"]
    if profile.empty:
        return pd.DataFrame(columns=keys + list(METRICS))

    def keyed(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame["window_start"] = frame["window"].map(lambda w: w["start"] if isinstance(w, dict) else w.start)
        frame["served_entity"] = frame["slice_value"]
        return frame

    p = keyed(profile)
    t = p[p["column_name"] == TABLE_COLUMN].set_index(keys)
    out = pd.DataFrame(index=t.index)
    out["request_count"] = t["count"]
    for col in ("epoch_count", "error_rate", "latency_p50_ms", "latency_p99_ms", "predicted_target_rate", "roc_auc",
                "balanced_accuracy"):
        out[col] = t[col]
    s = p[p["column_name"] == "score"].set_index(keys)
    out["score_mean"] = s["mean"].reindex(out.index)
    for name in ("roc_auc_drop", "score_psi", "score_ks", "score_wasserstein", "rms_psi_max"):
        out[name] = np.nan
    if not drift.empty:
        d = keyed(drift)
        sd = d[d["column_name"] == "score"].set_index(keys)
        out["score_psi"] = sd["population_stability_index"].reindex(out.index)
        out["score_ks"] = sd["ks_test"].map(lambda k: k["statistic"] if k is not None else np.nan).reindex(out.index)
        out["score_wasserstein"] = sd["wasserstein_distance"].reindex(out.index)
        td = d[d["column_name"] == TABLE_COLUMN].set_index(keys)
        out["roc_auc_drop"] = (-td["mean_delta"]).reindex(out.index)
        rd = d[d["column_name"].str.startswith("rms_")]
        if not rd.empty:
            out["rms_psi_max"] = rd.groupby(keys)["population_stability_index"].max().reindex(out.index)
    return out.reset_index().sort_values("window_start").reset_index(drop=True)
