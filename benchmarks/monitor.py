"""`p300 monitor` over a large inference log: 100,000 logged epochs by default.

Writes a model version with lineage (a features table of its training epochs), then logs
``--requests`` requests of ``--epochs`` epochs (16 channels x 71 samples, the demo's
shape) with the server's own writer over ten past windows, and times the monitor: the
first run (which also scores the version's training baseline once) and a rerun (nothing
new to do). The target: under 60 s for 100,000 epochs on 2 cores.

    .venv/bin/python benchmarks/monitor.py              # 1,000 requests x 100 epochs
    .venv/bin/python benchmarks/monitor.py --quick      # 20 x 50
    .venv/bin/python benchmarks/monitor.py --input-sample-epochs 0   # RMS from every request
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import orjson
import pyarrow as pa

from pipeline import registry as reg
from pipeline.config import load_config
from pipeline.serving.inference_log import InferenceLog
from pipeline.model import P300Model, build_estimator, model_signature
from pipeline.model_code import model_code_paths
from pipeline.report import Reporter


def epochs(n: int, channels: int, n_times: int, rng: np.random.Generator, gain: float = 1.0):
    y = np.where(rng.random(n) < 1 / 6, 2, 1)
    X = rng.normal(size=(n, channels, n_times)).astype(np.float32) * 8
    X[y == 2, :, n_times // 2:] += 3.0
    return (X * gain).reshape(n, -1), y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=100, help="epochs per request")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--input-sample-epochs", type=int, default=None,
                        help="monitoring.input_sample_epochs (default: the configuration's; 0: every request)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.epochs = 20, 50
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="p300-monitor-bench-") as tmp:
        cfg = load_config(root=str(Path(tmp) / "lakehouse"), env={},
                          overrides={"monitoring.window_s": "60", "monitoring.lateness_s": "0",
                                     **({"monitoring.input_sample_epochs": str(args.input_sample_epochs)}
                                        if args.input_sample_epochs is not None else {})})
        from pipeline.monitor import monitor
        from pipeline.tables import FEATURES_SCHEMA
        from pipeline.spark import get_spark

        t = cfg.preprocess.n_times
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        spark = get_spark(cfg)
        print(f"spark session: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        X, y = epochs(2000, args.channels, t, rng)
        n, f = X.shape
        table = pa.table({"subject_id": pa.array(np.repeat([1, 2], n // 2).astype(np.int32)),
                          "epoch_idx": pa.array(np.arange(n, dtype=np.int32)),
                          "event_sample": pa.array(np.arange(n, dtype=np.int64)),
                          "label": pa.array(y.astype(np.int32)),
                          "features": pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * f, f, dtype=np.int32)),
                                                               pa.array(X.reshape(-1)))})
        spark.createDataFrame(table, FEATURES_SCHEMA).write.format("delta").save(cfg.table("features"))
        client = reg.mlflow_client(cfg)
        model = P300Model(build_estimator().fit(X, y), f)
        with mlflow.start_run(experiment_id=reg.ensure_experiment(client, cfg, cfg.registry.experiment)):
            mlflow.log_params({reg.PARAM_TRAINING_SUBJECTS: "1,2", reg.PARAM_FEATURES_VERSION: 0})
            info = mlflow.pyfunc.log_model(name="model", python_model=model, code_paths=model_code_paths(),
                                           signature=model_signature(f), registered_model_name=cfg.registry.model_name)
        version = str(info.registered_model_version)

        now = int(time.time() * 1000)
        start = (now // 60_000 - 11) * 60_000
        log = InferenceLog(cfg.serving_dir / "inference_wal", cfg.table("inference_log"), flush_interval_s=3600,
                           segment_mb=256).start()
        t0 = time.perf_counter()
        batch, _ = epochs(args.epochs, args.channels, t, rng)
        for i in range(args.requests):
            w = i * 10 // args.requests  # ten windows; the later five drifted (louder)
            Xb = batch * (1.8 if w >= 5 else 1.0)
            proba, label = model.predict_matrix(Xb)
            body = orjson.dumps({"inputs": Xb, "params": {"subject_id": 3}}, option=orjson.OPT_SERIALIZE_NUMPY)
            resp = orjson.dumps({"predictions": [{"probability": p, "label": int(l)}
                                                 for p, l in zip(proba.tolist(), label.tolist())]})
            log.record(body, resp, status_code=200, timestamp_ms=start + w * 60_000 + i % 1000,
                       execution_time_ms=10, endpoint_name="p300-endpoint", served_entity_name="champion",
                       model_name=cfg.registry.model_name, model_version=version)
            if i % 100 == 99:
                log.flush()
        log.close()
        size = sum(p.stat().st_size for p in Path(cfg.table("inference_log")).rglob("*.parquet"))
        print(f"logged {args.requests} requests x {args.epochs} epochs = {args.requests * args.epochs} epochs "
              f"({size / 1e6:.0f} MB of Parquet) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

        rep = Reporter(quiet=True)
        t0 = time.perf_counter()
        first = monitor(cfg, rep, now_ms=now)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = monitor(cfg, rep, now_ms=now)
        t_again = time.perf_counter() - t0
    epochs_total = args.requests * args.epochs
    print(f"p300 monitor over {epochs_total} logged epochs ({first.processed} windows): {t_first:.1f}s "
          f"(includes the version's baseline); rerun ({again.processed} windows): {t_again:.1f}s")
    n = cfg.monitoring.input_sample_epochs
    print(f"channel RMS from {f'about {n} epochs per window' if n else 'every request'}")
    print(f"rule: {first.outcome.reason if first.outcome else 'n/a'}")
    if epochs_total >= 100_000:  # the target's size; smaller runs only show that the benchmark works
        print(f"target: under 60 s for 100,000 epochs: {'met' if t_first < 60 else 'MISSED'}")
    print(f"machine: {os.cpu_count()} cores; load average {load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after "
          "(shared with other engineers' work)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
