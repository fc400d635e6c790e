"""Shared pieces of the monitoring tests: a registered version with lineage, a features
table it was trained on, and inference-log rows written by the server's own writer."""
from __future__ import annotations

import time
from pathlib import Path

import mlflow
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from pipeline import registry as reg
from pipeline.config import Config
from pipeline.serving.inference_log import InferenceLog
from pipeline.model import P300Model, build_estimator, model_signature
from pipeline.model_code import model_code_paths

N_CHANNELS = 4


def epochs(cfg: Config, n: int, seed: int, gain: float = 1.0, signal: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """(X, y): Target epochs (label 2) carry a bump on every channel's later samples."""
    rng = np.random.default_rng(seed)
    t = cfg.preprocess.n_times
    y = np.where(rng.random(n) < 0.3, 2, 1)
    X = rng.normal(size=(n, N_CHANNELS, t)).astype(np.float32)
    X[y == 2, :, t // 2:] += signal
    return (X * gain).reshape(n, -1), y


def register_with_lineage(spark, cfg: Config, alias: str = "champion") -> str:
    """Features for subjects 1-2 (Delta version 0) and a version trained on them."""
    from pipeline.tables import FEATURES_SCHEMA

    X, y = epochs(cfg, 300, seed=1)
    n, f = X.shape
    table = pa.table({
        "subject_id": pa.array(np.repeat([1, 2], n // 2).astype(np.int32)),
        "epoch_idx": pa.array(np.arange(n, dtype=np.int32)),
        "event_sample": pa.array(np.arange(n, dtype=np.int64)),
        "label": pa.array(y.astype(np.int32)),
        "features": pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * f, f, dtype=np.int32)),
                                             pa.array(X.reshape(-1))),
    })
    spark.createDataFrame(table, FEATURES_SCHEMA).write.format("delta").save(cfg.table("features"))
    client = reg.mlflow_client(cfg)
    exp = reg.ensure_experiment(client, cfg, cfg.registry.experiment)
    with mlflow.start_run(experiment_id=exp):
        mlflow.log_params({reg.PARAM_TRAINING_SUBJECTS: "1,2", reg.PARAM_FEATURES_VERSION: 0,
                           reg.PARAM_FEATURES_TABLE: cfg.table("features"), reg.PARAM_N_FEATURES: f})
        mlflow.log_metric("cv_roc_auc", 0.95)
        info = mlflow.pyfunc.log_model(name="model", python_model=P300Model(build_estimator().fit(X, y), f),
                                       code_paths=model_code_paths(), signature=model_signature(f),
                                       registered_model_name=cfg.registry.model_name)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(cfg.registry.model_name, alias, version)
    return version


def log_requests(cfg: Config, version: str, windows: list[dict], start_ms: int, per_window: int = 4,
                 batch: int = 25) -> pd.DataFrame:
    """Score epochs with the registered version and log them as the server would, one window
    after another (``windows``: gain/signal of each); returns the labels of what was sent."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}/{version}").unwrap_python_model()
    log = InferenceLog(cfg.serving_dir / "inference_wal", cfg.table("inference_log"), flush_interval_s=60).start()
    labels = []
    try:
        for w, spec in enumerate(windows):
            for r in range(per_window):
                X, y = epochs(cfg, batch, seed=100 * w + r, **spec)
                proba, label = model.predict_matrix(X)
                cid = f"w{w}-r{r}"
                body = orjson.dumps({"inputs": X.tolist(), "params": {"subject_id": 50 + w}})
                resp = orjson.dumps({"predictions": [{"probability": p, "label": int(l)}
                                                     for p, l in zip(proba.tolist(), label.tolist())]})
                log.record(body, resp, status_code=200, timestamp_ms=start_ms + w * cfg.monitoring.window_s * 1000 + r,
                           execution_time_ms=5 + r, endpoint_name="p300-endpoint", served_entity_name="champion",
                           model_name=cfg.registry.model_name, model_version=version, client_request_id=cid)
                labels += [(cid, i, int(v), 50 + w) for i, v in enumerate(y)]
            log.record(b"{broken", b'{"error_code": "MALFORMED_REQUEST"}', status_code=400,
                       timestamp_ms=start_ms + w * cfg.monitoring.window_s * 1000 + 50, execution_time_ms=1,
                       endpoint_name="p300-endpoint", served_entity_name="champion",
                       model_name=cfg.registry.model_name, model_version=version)
    finally:
        log.close()
    return pd.DataFrame(labels, columns=["client_request_id", "epoch_index", "label", "subject_id"])


def window_start(cfg: Config, now_ms: int, back: int) -> int:
    w = cfg.monitoring.window_s * 1000
    return (now_ms // w - back) * w


def now_ms() -> int:
    return int(time.time() * 1000)


def tmp_path_of(cfg: Config) -> Path:
    return cfg.local_root
