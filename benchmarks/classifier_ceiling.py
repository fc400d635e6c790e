"""How far leave-one-subject-out is from what the data allows: three protocols per candidate.

    python benchmarks/classifier_ceiling.py --root /tmp/cmp            # after synth, ingest, preprocess
    python benchmarks/classifier_ceiling.py --root /tmp/cmp --classifiers lda,xdawn_ts

Reads the root's features table with deltalake (no Spark) and, for each subject and each
classifier, the ROC AUC on that subject's epochs when the model is trained on
- ``loso``: every other subject (what `p300 compare` and evaluate measure);
- ``within``: 4/5 of the subject's own labelled epochs (5 stratified folds);
- ``pooled``: every other subject plus 4/5 of its own labelled epochs, the ceiling of any
  transfer method: alignment or adaptation can at best recover what the subject's own
  labels add.
Prints the mean and minimum per-subject AUC of each, and loso's ratio to pooled. If pooled
is not above a target, no cross-subject method on these features reaches it either.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.classifiers import build_classifier, is_target  # noqa: E402
from pipeline.config import load_config  # noqa: E402


def _features(root: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    from deltalake import DeltaTable

    cfg = load_config(root=root, env={})
    frame = DeltaTable(cfg.table("features")).to_pyarrow_table(
        columns=["subject_id", "label", "features"]).to_pandas()
    X = np.stack(frame["features"].to_numpy()).astype(np.float32)
    y = is_target(frame["label"].to_numpy(), cfg.signal.event_ids.target)
    return X, y, frame["subject_id"].to_numpy(), cfg.preprocess.n_times


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def per_subject(name: str, X: np.ndarray, y: np.ndarray, g: np.ndarray, n_times: int) -> dict[str, np.ndarray]:
    """Per-subject AUC under each protocol (subjects in sorted order)."""
    from sklearn.model_selection import StratifiedKFold

    out: dict[str, list[float]] = {"loso": [], "within": [], "pooled": []}
    for s in np.unique(g):
        own, other = np.flatnonzero(g == s), np.flatnonzero(g != s)
        fit = build_classifier(name, n_times).fit(X[other], y[other])
        out["loso"].append(_auc(y[own], fit.predict_proba(X[own])[:, 1]))
        within, pooled = np.empty(len(own)), np.empty(len(own))
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(own, y[own]):
            model = build_classifier(name, n_times).fit(X[own[tr]], y[own[tr]])
            within[te] = model.predict_proba(X[own[te]])[:, 1]
            idx = np.concatenate([other, own[tr]])
            pooled[te] = build_classifier(name, n_times).fit(X[idx], y[idx]).predict_proba(X[own[te]])[:, 1]
        out["within"].append(_auc(y[own], within))
        out["pooled"].append(_auc(y[own], pooled))
    return {k: np.array(v) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="a root with a features table (p300 synth, ingest, preprocess)")
    ap.add_argument("--classifiers", default="lda,xdawn_ts", help="comma-separated registry names")
    args = ap.parse_args()
    X, y, g, n_times = _features(args.root)
    print(f"{args.root}: {len(np.unique(g))} subjects, {len(X)} epochs x {X.shape[1]} features, "
          f"Target rate {y.mean():.3f}")
    print(f"{'classifier':<10}  {'protocol':<7}  {'mean':>5}  {'min':>5}  per subject")
    for name in args.classifiers.split(","):
        t0 = time.perf_counter()
        res = per_subject(name, X, y, g, n_times)
        for proto, v in res.items():
            print(f"{name:<10}  {proto:<7}  {v.mean():.3f}  {v.min():.3f}  {' '.join(f'{a:.3f}' for a in v)}")
        print(f"{name:<10}  loso / pooled: mean {res['loso'].mean() / res['pooled'].mean():.3f}x "
              f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
