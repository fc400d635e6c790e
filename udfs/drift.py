"""Pure drift and summary statistics for the monitor (no Spark, no I/O).

Scores are compared with scipy's two-sample Kolmogorov-Smirnov test and Wasserstein
distance; the population stability index has no scipy function, so it is here: bins are
the baseline's quantiles, so that each holds about the same share of the baseline.
Inputs are summarised per epoch by the RMS of each channel (a feature vector is
``channels x n_times`` preprocessed samples), a handful of numbers instead of 1,000+.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["psi", "ks_test", "wasserstein", "channel_rms", "request_matrix", "response_scores", "quantiles",
           "QUANTILES"]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_EPS = 1e-4  # floor of a bin's share: an empty bin would make PSI infinite


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``actual`` against ``expected`` (NaN if either is empty).

    Rule of thumb: < 0.1 stable, 0.1-0.2 moderate shift, > 0.2 significant shift."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if expected.size == 0 or actual.size == 0:
        return float("nan")
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1) / expected.size
    a = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1) / actual.size
    e, a = np.maximum(e, _EPS), np.maximum(a, _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_test(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the two-sample KS test; NaNs if either sample is empty."""
    from scipy.stats import ks_2samp

    if len(expected) == 0 or len(actual) == 0:
        return float("nan"), float("nan")
    # scipy's "auto" takes the exact p-value up to 10,000 per side, ~0.1 s per call once the
    # samples differ; the asymptotic one agrees to a few percent past a million pairs
    res = ks_2samp(expected, actual, method="asymp" if len(expected) * len(actual) > 1_000_000 else "auto")
    return float(res.statistic), float(res.pvalue)


def wasserstein(expected: np.ndarray, actual: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    if len(expected) == 0 or len(actual) == 0:
        return float("nan")
    return float(wasserstein_distance(expected, actual))


def quantiles(values: np.ndarray) -> list[float]:
    values = np.asarray(values, dtype=np.float64)
    return [float(q) for q in np.quantile(values, QUANTILES)] if values.size else [float("nan")] * len(QUANTILES)


def channel_rms(matrix: np.ndarray, n_times: int) -> np.ndarray:
    """(n_epochs, n_channels) RMS of each channel's samples; a width that is not a multiple
    of ``n_times`` is one channel (the whole vector)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    n, width = matrix.shape
    channels = width // n_times if n_times and width % n_times == 0 else 1
    blocks = matrix.reshape(n, channels, width // channels).astype(np.float64)
    return np.sqrt(np.mean(blocks * blocks, axis=2))


def _loads(body: str | bytes) -> Any:
    try:
        import orjson

        return orjson.loads(body)
    except ImportError:  # pragma: no cover - orjson is pinned; json is the fallback
        import json

        return json.loads(body)


def request_matrix(body: str | bytes) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(epochs, params) of a logged invocation body: the epochs (inputs, instances,
    dataframe_split or dataframe_records) as a float32 matrix, None when they are not a
    numeric matrix; ``params`` as sent (subject_id, client_request_id), {} if none."""
    try:
        payload = _loads(body)
    except ValueError:
        return None, {}
    if not isinstance(payload, dict):
        return None, {}
    params = payload.get("params") if isinstance(payload.get("params"), dict) else {}
    rows: Any = None
    for key in ("inputs", "instances"):
        if key in payload:
            rows = payload[key]
            if isinstance(rows, dict) and len(rows) == 1:
                rows = next(iter(rows.values()))
            break
    else:
        if isinstance(payload.get("dataframe_split"), dict):
            rows = payload["dataframe_split"].get("data")
        elif isinstance(payload.get("dataframe_records"), list):
            rows = [list(r.values()) for r in payload["dataframe_records"] if isinstance(r, dict)]
    if isinstance(rows, list) and rows and isinstance(rows[0], list) and len(rows[0]) == 1 \
            and isinstance(rows[0][0], list):
        rows = [r[0] for r in rows]  # one array column
    try:
        matrix = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError):
        return None, params
    if matrix.ndim == 1 and matrix.size:
        matrix = matrix[None, :]
    return (matrix if matrix.ndim == 2 and matrix.shape[0] else None), params


def response_scores(body: str | bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """(Target probability, predicted label) per epoch of a logged response; None if unreadable."""
    try:
        payload = _loads(body)
    except ValueError:
        return None
    preds = payload.get("predictions") if isinstance(payload, dict) else None
    if isinstance(preds, dict):  # column-oriented
        proba, label = preds.get("probability"), preds.get("label")
    elif isinstance(preds, list) and all(isinstance(p, dict) for p in preds):
        proba, label = [p.get("probability") for p in preds], [p.get("label") for p in preds]
    else:
        return None
    try:
        return np.asarray(proba, dtype=np.float64), np.asarray(label, dtype=np.int64)
    except (TypeError, ValueError):
        return None
