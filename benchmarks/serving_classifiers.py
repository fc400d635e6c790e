"""Served latency per classifier: `benchmarks/serving.py --classifiers lda,xdawn_ts`.

Registers one model version per classifier of the registry (pipeline/classifiers.py),
fitted on the same synthetic epochs (channels x ``preprocess.n_times`` features), serves
each in turn as the local endpoint's challenger, and times the same ``inputs`` request
(sequential, one keep-alive connection, after warm-ups). Prints p50/p99 per classifier and
each one's p50 ratio to the first's (target: within 1.5x of today's LDA).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline import registry as reg
from pipeline.config import load_config
from pipeline.model import P300Model, build_estimator, model_signature
from pipeline.model_code import model_code_paths
from pipeline.report import format_table
from pipeline.serving import apply_served_versions, invocation_url, start_local_server, stop_local_server, \
    workspace_client


def register(cfg, classifier: str, X, y) -> str:
    import mlflow

    from pipeline.classifiers import fit_params, is_target

    client = reg.mlflow_client(cfg)
    exp = reg.ensure_experiment(client, cfg, cfg.registry.experiment)
    est = build_estimator(classifier, cfg.preprocess.n_times)
    groups = np.arange(len(y)) % 3  # three pseudo-subjects (re-centring needs groups)
    est.fit(X, is_target(y, 2), **fit_params(est, groups))
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=P300Model(est, X.shape[1], classifier=classifier),
            code_paths=model_code_paths(), signature=model_signature(X.shape[1]), input_example=X[:2],
            registered_model_name=cfg.registry.model_name,
            pip_requirements=[f"{p}=={pkg_version(p)}" for p in ("mlflow", "scikit-learn", "numpy", "pandas", "pyriemann")])
    return str(info.registered_model_version)


def run(args, synthetic: Callable, sequential: Callable) -> int:
    names = [c.strip() for c in args.classifiers.split(",") if c.strip()]
    load0 = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory(prefix="p300-serving-clf-") as tmp:
        cfg = load_config(root=str(Path(tmp) / "lakehouse"), env={},
                          overrides={"serving.endpoint_name": "bench", "serving.max_body_mb": "256"})
        n_features = args.channels * cfg.preprocess.n_times
        X, y = synthetic(1200, n_features, seed=0)
        body = json.dumps({"inputs": synthetic(args.epochs, n_features, seed=1)[0].tolist()}).encode()
        print(f"{args.epochs} epochs per request ({len(body) / 1e6:.2f} MB), {n_features} features; "
              f"{args.requests} sequential requests per classifier; {os.cpu_count()} cores, load {load0[0]:.2f}",
              file=sys.stderr)
        try:
            start_local_server(cfg)
            ws = workspace_client(cfg)
            for name in names:
                version = register(cfg, name, X, y)
                apply_served_versions(ws, cfg, {"challenger": version})
                print(f"sequential: {name} (version {version}) ...", file=sys.stderr)
                results[name] = sequential(invocation_url(ws, cfg, "challenger"), dict(ws.config.authenticate()),
                                           body, args.requests, args.epochs)
        finally:
            stop_local_server(cfg)
    base = results[names[0]].get("p50")
    rows = [(n, *(("", "", "", r["error"][:60]) if "error" in r else
                  (f"{r['p50']:.1f}", f"{r['p99']:.1f}", f"{r['eps']:.0f}", f"{r['p50'] / base:.2f}x" if base else "")))
            for n, r in results.items()]
    print(format_table(rows, ["classifier", "p50 ms", "p99 ms", "epochs/s", f"p50 / {names[0]}"]))
    worst = max((r["p50"] / base for r in results.values() if "p50" in r), default=float("nan")) if base else float("nan")
    print(f"target: served p50 per {args.epochs}-epoch request within 1.5x of {names[0]}'s: "
          f"{'met' if worst <= 1.5 else 'MISSED'} (worst {worst:.2f}x); load {load0[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    return 0
