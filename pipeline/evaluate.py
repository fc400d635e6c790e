"""`p300 evaluate`: score served model(s) on subjects they never saw, through the endpoint.

Which version a served entity holds is read from the endpoint (not from the registry
alias: the two differ mid-deploy). Each version's training subjects come from its run;
the holdout is every processed subject that version (with ``both``: either version)
never saw. Epochs go in batches to the entity's direct invocation URL; metrics go to
one MLflow run per target in the evaluation experiment.
"""
from __future__ import annotations

import argparse
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import make_metric
from sklearn.metrics import balanced_accuracy_score

from pipeline import plots
from pipeline.config import Config, ConfigError
from pipeline.invoke import InvocationResult, invoke_batches
from pipeline.metrics import per_subject_auc, roc_auc, subject_summary
from pipeline.registry import ensure_experiment, get_version, mlflow_client, version_lineage
from pipeline.registry_names import CHALLENGER, CHAMPION, TAG_COMPARISON, TAG_TARGET, TAG_TARGET_SET, TAG_VERSION
from pipeline.report import Reporter
from pipeline.serving import auth_headers, get_endpoint, invocation_url, served_versions, workspace_client
from pipeline.spark import get_spark
from pipeline.storage import table_exists, table_version
from pipeline.tables import feature_subjects, load_features

__all__ = ["Holdout", "EvaluationResult", "choose_holdout", "evaluation_metrics", "evaluate", "main",
           "TAG_TARGET", "TAG_COMPARISON", "TAG_VERSION", "TAG_TARGET_SET"]

@dataclass
class Holdout:
    subjects: list[int]
    excluded: dict[str, list[int]]  # served entity -> the training subjects that were excluded


@dataclass
class EvaluationResult:
    target: str
    version: str
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)


def choose_holdout(processed: list[int], seen: dict[str, list[int]], requested: list[int] | None) -> Holdout:
    """Processed subjects no evaluated version trained on, optionally narrowed to ``requested``."""
    excluded = set().union(*seen.values()) if seen else set()
    pool = sorted(set(processed) - excluded)
    if requested:
        unknown = sorted(set(requested) - set(processed))
        if unknown:
            raise ConfigError(f"--subjects: {unknown} have no features (processed subjects: {processed})")
        overlap = sorted(set(requested) & excluded)
        if overlap:
            raise ConfigError("--subjects: " + "; ".join(
                f"{name} was trained on {sorted(set(s) & set(overlap))}" for name, s in seen.items() if set(s) & set(overlap))
                + " (a model is never evaluated on its training subjects)")
        pool = sorted(set(requested))
    if not pool:
        why = "; ".join(f"{name} was trained on {s}" for name, s in seen.items())
        raise ConfigError(f"empty holdout: all processed subjects {processed} are excluded ({why}); "
                          "ingest and preprocess new subjects, or train on fewer")
    return Holdout(pool, {k: sorted(v) for k, v in seen.items()})


def _roc_auc(predictions: pd.Series, targets: pd.Series, probability: pd.Series) -> float:
    return roc_auc(targets.to_numpy() == 1, probability.to_numpy())


def _balanced_accuracy(predictions: pd.Series, targets: pd.Series) -> float:
    """NaN where the targets hold one class (MLflow first tries each metric on one row), as
    ``roc_auc``: sklearn would warn there, and the value would say nothing."""
    if targets.nunique() < 2:
        return float("nan")
    return float(balanced_accuracy_score(targets, predictions))


ROC_AUC = make_metric(eval_fn=_roc_auc, greater_is_better=True, name="roc_auc")
BALANCED_ACCURACY = make_metric(eval_fn=_balanced_accuracy, greater_is_better=True, name="balanced_accuracy")


def evaluation_metrics(y_true: np.ndarray, proba: np.ndarray, pred: np.ndarray) -> tuple[dict[str, float], dict]:
    """MLflow's classifier evaluation on static predictions (Target = positive class) plus
    ROC AUC and balanced accuracy; call inside an active run. Returns (metrics, artifacts).
    Labels are booleans: MLflow logs the frame as the run's dataset and warns about integer
    columns in its schema (they could not hold missing values); the metrics are the same."""
    data = pd.DataFrame({"target": y_true.astype(bool), "prediction": pred.astype(bool),
                         "probability": proba.astype(np.float64)})
    result = mlflow.evaluate(data=data, targets="target", predictions="prediction", model_type="classifier",
                             extra_metrics=[ROC_AUC, BALANCED_ACCURACY], evaluator_config={"pos_label": True})
    return {k: float(v) for k, v in result.metrics.items()}, dict(result.artifacts)


def _log_run(cfg: Config, experiment_id: str, target: str, version: str, target_set: str, comparison: str,
             holdout: Holdout, fversion: int, y: np.ndarray, groups: np.ndarray, res: InvocationResult,
             batch_size: int) -> EvaluationResult:
    target_id = cfg.signal.event_ids.target
    ok = res.scored
    y_bin = (y == target_id).astype(int)
    pred_bin = (res.label == target_id).astype(int)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"evaluate-{target}-v{version}") as run:
        mlflow.set_tags({
            TAG_TARGET: target, TAG_VERSION: version, TAG_TARGET_SET: target_set, TAG_COMPARISON: comparison,
            "endpoint": cfg.serving.endpoint_name, "served_entity": target, "model_name": cfg.registry.model_name,
            "model_version": version, "holdout_subjects": ",".join(map(str, holdout.subjects)),
            "features_table": cfg.table("features"), "features_table_version": str(fversion),
        })
        mlflow.log_params({"batch_size": batch_size, "concurrency": cfg.evaluation.concurrency,
                           "retries": cfg.evaluation.retries, "n_holdout_subjects": len(holdout.subjects)})
        metrics: dict[str, float] = {}
        if ok.any():
            metrics, _ = evaluation_metrics(y_bin[ok], res.probability[ok], pred_bin[ok])
            per_subject = per_subject_auc(groups[ok], y_bin[ok] == 1, res.probability[ok])
            metrics.update({f"roc_auc_subject_{sid:02d}": auc for sid, auc in per_subject.items()})
            metrics.update(subject_summary(per_subject))  # roc_auc_subject_mean / _min, gate-able
            with tempfile.TemporaryDirectory() as tmp:
                ids = cfg.signal.event_ids
                fig = plots.roc_figure(y[ok], res.probability[ok], pos_label=ids.target, name=f"{target} v{version}",
                                       title=f"{target} v{version}: holdout ROC")
                mlflow.log_artifact(str(plots.save_png(fig, Path(tmp) / "roc_curve.png")), "plots")
                fig = plots.confusion_figure(y[ok], res.label[ok], labels=(ids.nontarget, ids.target),
                                             title=f"{target} v{version}: holdout confusion")
                mlflow.log_artifact(str(plots.save_png(fig, Path(tmp) / "confusion_matrix.png")), "plots")
        extra = {
            "epochs": float(len(y)), "epochs_scored": float(ok.sum()), "failed_requests": float(len(res.failed_batches)),
            "failed_epochs": float(res.failed_epochs), "retries": float(res.retries),
            "latency_p50_ms": res.latency_ms(50), "latency_p95_ms": res.latency_ms(95),
            "latency_p99_ms": res.latency_ms(99), "epochs_per_second": res.epochs_per_s,
        }
        metrics.update(extra)
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN-free
        if res.failed_batches:
            mlflow.log_text("\n".join(f"batch {i}: {reason}" for i, reason in res.failed_batches), "failed_requests.txt")
        return EvaluationResult(target, version, run.info.run_id, metrics)


def evaluate(cfg: Config, target: str, subjects: list[int] | None, batch_size: int, rep: Reporter) -> list[EvaluationResult]:
    client = mlflow_client(cfg)
    ws = workspace_client(cfg)
    endpoint = get_endpoint(ws, cfg.serving.endpoint_name)
    if endpoint is None:
        raise ConfigError(f"endpoint {cfg.serving.endpoint_name!r} does not exist: run `p300 deploy` first")
    served = served_versions(endpoint)
    targets = [CHAMPION, CHALLENGER] if target == "both" else [target]
    missing = [t for t in targets if t not in served]
    if missing:
        raise ConfigError(f"endpoint {cfg.serving.endpoint_name!r} serves {served or 'nothing'}, not {missing}")
    seen: dict[str, list[int]] = {}
    for t in targets:
        mv = get_version(client, cfg, served[t])
        if mv is None:
            raise ConfigError(f"{t} serves {cfg.registry.model_name} v{served[t]}, which the registry does not have")
        seen[t] = version_lineage(client, mv).training_subjects
        if not seen[t]:
            raise ConfigError(f"{t} v{served[t]}: its run records no training subjects; cannot build a holdout")

    spark = get_spark(cfg)
    if not table_exists(spark, cfg, "features"):
        raise ConfigError(f"no features table at {cfg.table('features')}: run `p300 preprocess` first")
    fversion = table_version(spark, cfg, "features")
    holdout = choose_holdout(feature_subjects(spark, cfg, fversion), seen, subjects)
    data = load_features(spark, cfg, holdout.subjects, fversion)
    rep.info(f"holdout: subjects {holdout.subjects} ({len(data.y)} epochs, features version {fversion}); "
             + "; ".join(f"{t} v{served[t]} excluded {seen[t]}" for t in targets))

    experiment_id = ensure_experiment(client, cfg, cfg.evaluation.experiment)
    comparison = uuid.uuid4().hex
    headers = auth_headers(ws)
    results, raw = [], {}
    for t in targets:
        url = invocation_url(ws, cfg, t)
        with rep.stage(f"evaluating {t} v{served[t]} at {url}"):
            res = invoke_batches(url, data.X, headers=headers, batch_size=batch_size,
                                 concurrency=cfg.evaluation.concurrency, retries=cfg.evaluation.retries,
                                 timeout_s=cfg.evaluation.request_timeout_s,
                                 cold_start_window_s=cfg.evaluation.cold_start_window_s,
                                 progress=lambda d, n: rep.progress(d, n, f"{t} batches") if d == n or d % 20 == 0 else None)
        raw[t] = res
        if res.failed_batches:
            rep.warn(f"{t}: {len(res.failed_batches)} request(s) failed after retries ({res.failed_epochs} epochs "
                     f"unscored); first: {res.failed_batches[0][1]}")
        results.append(_log_run(cfg, experiment_id, t, served[t], target, comparison, holdout, fversion, data.y,
                                data.groups, res, batch_size))
    if len(results) == 2:  # both: one ROC figure with the two curves, in each run
        curves = {f"{t} v{served[t]}": (data.y[r.scored], r.probability[r.scored]) for t, r in raw.items() if r.scored.any()}
        with tempfile.TemporaryDirectory() as tmp:
            png = plots.save_png(plots.roc_compare_figure(curves, pos_label=cfg.signal.event_ids.target,
                                                          title="holdout ROC: champion vs challenger"),
                                 Path(tmp) / "roc_compare.png")
            for r in results:
                client.log_artifact(r.run_id, str(png), "plots")
    _summary(rep, results, holdout)
    return results


def _summary(rep: Reporter, results: list[EvaluationResult], holdout: Holdout) -> None:
    cols = ["roc_auc", "roc_auc_subject_mean", "roc_auc_subject_min", "balanced_accuracy", "f1_score", "precision_score", "recall_score", "epochs_scored",
            "failed_requests", "latency_p50_ms", "latency_p99_ms", "epochs_per_second"]
    counts = {"epochs_scored", "failed_requests"}
    rep.table([[r.target, r.version] + [int(r.metrics[c]) if c in counts and c in r.metrics else r.metrics.get(c)
                                        for c in cols] for r in results],
              ["served", "version", "roc_auc", "subj_mean", "subj_min", "bal_acc", "f1", "precision", "recall", "epochs", "failed",
               "p50_ms", "p99_ms", "epochs/s"],
              title=f"evaluate: holdout subjects {holdout.subjects}")
    for r in results:
        rep.result(f"  {r.target} v{r.version}: MLflow run {r.run_id}")


def main(cfg: Config, args: argparse.Namespace, rep: Reporter) -> int:
    results = evaluate(cfg, args.target, args.subjects, args.batch_size or cfg.evaluation.batch_size, rep)
    # a run where every request failed measured nothing: that is a failed job
    return 1 if any(r.metrics.get("epochs_scored", 0) == 0 for r in results) else 0
