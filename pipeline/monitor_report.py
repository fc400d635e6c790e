"""What a monitor run shows: an MLflow run with the metrics over time, and the summary.

One figure per metric, x = window start, one line per served model (``model_id`` and the
entity that served it), so a drift or an AUC drop is visible where it began.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pandas as pd

from pipeline import plots
from pipeline.config import Config
from pipeline.registry import ensure_experiment, mlflow_client
from pipeline.report import Reporter
from pipeline.retrain_rule import RuleOutcome

__all__ = ["log_run", "summary", "metric_figure", "PLOTTED"]

PLOTTED = ("roc_auc", "roc_auc_drop", "score_psi", "score_ks", "score_wasserstein", "rms_psi_max", "score_mean",
           "predicted_target_rate", "error_rate", "latency_p99_ms", "request_count")


def metric_figure(metrics: pd.DataFrame, metric: str, threshold: float | None = None):
    fig = plots._figure(7.0, 4.0)
    ax = fig.add_subplot()
    for (model_id, served), part in metrics.groupby(["model_id", "served_entity"], sort=True):
        part = part.dropna(subset=[metric])
        if len(part):
            ax.plot(part["window_start"], part[metric], marker="o", label=f"{model_id} ({served})")
    if threshold is not None:
        ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label="rule threshold")
    ax.set_title(f"{metric} per window")
    ax.set_xlabel("window start (UTC)")
    ax.set_ylabel(metric)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return fig


def log_run(cfg: Config, metrics: pd.DataFrame, outcome: RuleOutcome | None, monitor_run_id: str,
            processed: int) -> str:
    """One MLflow run in ``monitoring.experiment``: plots, the latest window's metrics, the rule."""
    import mlflow

    client = mlflow_client(cfg)
    experiment_id = ensure_experiment(client, cfg, cfg.monitoring.experiment)
    rule = cfg.monitoring.rule
    with mlflow.start_run(experiment_id=experiment_id, run_name="monitor") as run:
        mlflow.set_tags({"p300.monitor_run_id": monitor_run_id, "windows_processed": str(processed),
                         "retrain": str(bool(outcome and outcome.fired)).lower(),
                         "rule": f"{rule.metric} {rule.direction} {rule.threshold:g}, {rule.k} of {rule.n}",
                         "rule_reason": outcome.reason if outcome else "no window for the rule"})
        mlflow.log_params({"window_s": cfg.monitoring.window_s, "psi_bins": cfg.monitoring.psi_bins,
                           "rule_metric": rule.metric, "rule_threshold": rule.threshold, "rule_k": rule.k,
                           "rule_n": rule.n})
        for row in metrics.itertuples(index=False):  # each window's metrics at its own time
            step_ms = int(pd.Timestamp(row.window_start).timestamp() * 1000)
            for m in PLOTTED:
                value = getattr(row, m)
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    mlflow.log_metric(f"{m}.{row.served_entity}", float(value), step=step_ms // 1000,
                                      timestamp=step_ms)
        mlflow.log_metric("retrain_flag", 1.0 if outcome and outcome.fired else 0.0)
        with tempfile.TemporaryDirectory() as tmp:
            for m in PLOTTED:
                if metrics[m].notna().any():
                    fig = metric_figure(metrics, m, rule.threshold if m == rule.metric else None)
                    mlflow.log_artifact(str(plots.save_png(fig, Path(tmp) / f"{m}.png")), "plots")
            path = Path(tmp) / "window_metrics.csv"
            metrics.to_csv(path, index=False)
            mlflow.log_artifact(str(path))
        return run.info.run_id


def summary(cfg: Config, rep: Reporter, metrics: pd.DataFrame, outcome: RuleOutcome | None, processed: int,
            run_id: str | None, last: int = 8) -> None:
    shown = metrics.tail(last)
    cols = ["request_count", "epoch_count", "roc_auc", "roc_auc_drop", "score_psi", "score_ks", "score_wasserstein",
            "rms_psi_max", "predicted_target_rate", "latency_p99_ms"]
    rows = [[pd.Timestamp(r["window_start"]).strftime("%H:%M:%S"), r["model_id"].split("/")[-1], r["served_entity"]]
            + [None if pd.isna(r[c]) else (int(r[c]) if c in ("request_count", "epoch_count") else float(r[c]))
               for c in cols] for _, r in shown.iterrows()]
    rep.table(rows, ["window", "version", "served", "requests", "epochs", "auc", "auc_drop", "psi", "ks", "wass",
                     "rms_psi", "target_rate", "p99_ms"],
              title=f"monitor: {max(processed, 0)} window(s) processed this run; latest {len(shown)} of {len(metrics)} "
                    f"({cfg.monitoring.window_s} s windows; drift against each version's training baseline)")
    if outcome is None and processed < 0:  # the caller reports the rule itself
        return
    if outcome is None:
        rep.result(f"monitor: no window served by {cfg.monitoring.rule.served_entity!r} yet: the rule did not run")
    else:
        flags = " ".join("X" if v else "." for v in outcome.violations)
        rep.result(f"monitor: rule [{flags}] {outcome.reason}")
        rep.result(f"monitor: retrain flag = {str(outcome.fired).lower()} (table {cfg.table('monitor_flags')})")
    if run_id:
        rep.result(f"monitor: MLflow run {run_id} (experiment {cfg.monitoring.experiment}; plots/*.png)")
