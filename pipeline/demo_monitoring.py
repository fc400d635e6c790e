"""The demo's monitoring step: a drifted cohort reaches the champion, the monitor notices, the
rule fires and `monitor_and_retrain` trains, deploys and evaluates a new challenger.

Short windows (2 s) so that five of them pass in seconds: two of already-known subjects,
three of a cohort synthesized with ``--drifted``. Each request carries a client_request_id;
the labels go to the ``labels`` table, as ground truth that arrives later would.
"""
from __future__ import annotations

import time
from typing import Callable

import httpx
import numpy as np
import orjson
from pyspark.sql import functions as F

from pipeline.config import Config
from pipeline.report import Reporter

__all__ = ["monitoring_step", "WINDOW_S"]

WINDOW_S = 2
BATCH = 32
PER_WINDOW = 80  # epochs per window


def _wait_for_next_window(window_s: int) -> None:
    time.sleep(window_s - (time.time() % window_s) + 0.05)


def _send(cfg: Config, windows: list[np.ndarray], labels: list[np.ndarray], subjects: list[int]) -> list[tuple]:
    from pipeline.serving import auth_headers, invocation_url, workspace_client

    ws = workspace_client(cfg)
    url, headers = invocation_url(ws, cfg), {**auth_headers(ws), "Content-Type": "application/json"}
    rows = []
    with httpx.Client(timeout=30) as http:
        for w, (X, y) in enumerate(zip(windows, labels)):
            _wait_for_next_window(WINDOW_S)
            for b in range(0, len(X), BATCH):
                cid = f"demo-w{w}-b{b // BATCH}"
                body = orjson.dumps({"client_request_id": cid, "inputs": X[b:b + BATCH].tolist(),
                                     "params": {"subject_id": subjects[w]}})
                if http.post(url, content=body, headers=headers).status_code == 200:
                    rows += [(cid, i, int(v), subjects[w]) for i, v in enumerate(y[b:b + BATCH])]
    _wait_for_next_window(WINDOW_S)  # the last window closes
    return rows


def monitoring_step(cfg: Config, rep: Reporter, run_step: Callable[[Config, list[str]], int], n: int,
                    minutes: str) -> int:
    """Drifted cohort -> endpoint -> `p300 job monitor_and_retrain`; returns the job's exit code."""
    from pipeline.monitor import all_metrics
    from pipeline.monitor_report import summary
    from pipeline.retrain_flag import retrain_requested
    from pipeline.spark import get_spark
    from pipeline.storage import read_table

    # the demo has labels, so its rule reads quality: retrain when the champion's ROC AUC is 0.1
    # below its cross-validated one in 2 of the last 5 windows (with few subjects, the score
    # distribution moves from subject to subject too much for score_psi to be the demo's signal)
    rule = cfg.monitoring.rule.model_copy(update={"metric": "roc_auc_drop", "threshold": 0.1})
    mcfg = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(
        update={"window_s": WINDOW_S, "lateness_s": 0.0, "rule": rule})})
    drifted = [n + 1, n + 2]
    for argv in (["synth", "--subjects", "2", "--first", str(n + 1), "--minutes", minutes, "--drifted"],
                 ["ingest"], ["preprocess"]):
        if run_step(mcfg, argv):
            return 1
    spark = get_spark(cfg)
    feats = read_table(spark, cfg, "features")
    known = n  # a subject of the original cohort
    windows, labels, subjects = [], [], []
    for sid, half in [(known, 0), (known, 1), (drifted[0], 0), (drifted[1], 0), (drifted[0], 1)]:
        part = feats.where(F.col("subject_id") == sid).orderBy("epoch_idx") \
            .select("label", F.col("features").cast("array<float>")).toPandas()
        per = min(PER_WINDOW, len(part) // 2)  # short recordings (--minutes 1): half a subject a window
        part = part.iloc[half * per:(half + 1) * per]  # each window its own epochs
        windows.append(np.stack(part["features"].to_numpy()).astype(np.float32))
        labels.append(part["label"].to_numpy())
        subjects.append(sid)
    with rep.stage(f"sending 5 windows of {WINDOW_S}s to the champion: subject {known} twice, then drifted "
                   f"subjects {drifted}"):
        rows = _send(cfg, windows, labels, subjects)
        spark.createDataFrame(rows, "client_request_id string, epoch_index int, label int, subject_id int") \
            .write.format("delta").mode("append").save(cfg.table("labels"))
    time.sleep(cfg.monitoring.flush_interval_s * 2 + 0.5)  # the server's flusher commits the last segment
    code = run_step(mcfg, ["job", "monitor_and_retrain"])
    metrics = all_metrics(spark, mcfg)
    rep.result("\nmonitoring summary: the champion's last 5 windows (2 of a known subject, 3 of the drifted cohort)")
    summary(mcfg, rep, metrics[metrics["served_entity"] == "champion"].tail(5), None, -1, None, last=5)
    champ = metrics[metrics["served_entity"] == "champion"].tail(5)
    if len(champ) == 5 and champ["roc_auc"].notna().all():
        before, after = champ["roc_auc"].iloc[:2].mean(), champ["roc_auc"].iloc[2:].mean()
        rep.result(f"ROC AUC: {before:.3f} on the known cohort -> {after:.3f} on the drifted one "
                   f"(drop {before - after:.3f}); score PSI {champ['score_psi'].iloc[:2].mean():.2f} -> "
                   f"{champ['score_psi'].iloc[2:].mean():.2f}")
    fired, why = retrain_requested(mcfg)
    rep.result(f"retraining rule: {'FIRED' if fired else 'did not fire'} ({why})")
    challenger = _challenger(mcfg)
    if fired and challenger:
        rep.result(f"retrained challenger: {challenger}")
    return code


def _challenger(cfg: Config) -> str | None:
    from pipeline.registry import CHALLENGER, alias_version, mlflow_client, version_lineage

    client = mlflow_client(cfg)
    mv = alias_version(client, cfg, CHALLENGER)
    if mv is None:
        return None
    lin = version_lineage(client, mv)
    exp = client.get_experiment_by_name(cfg.evaluation.experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.model_version = '{mv.version}'",
                              order_by=["attributes.start_time DESC"], max_results=1) if exp else []
    holdout = runs[0].data.metrics.get("roc_auc") if runs else None
    return (f"v{mv.version} trained on subjects {lin.training_subjects} (features version {lin.features_version}); "
            f"cv ROC AUC {lin.metrics.get('cv_roc_auc', float('nan')):.3f}"
            + (f", holdout ROC AUC {holdout:.3f} on subjects {runs[0].data.tags.get('holdout_subjects')}" if holdout
               is not None else ""))
