"""Real registered MLflow model versions for the serving tests, and a running local server.

``register_p300_version`` fits the pipeline's own estimator on small synthetic float32
data and logs it exactly as training does (P300Model, code_paths, tensor signature,
input example), then registers it. ``register_gated_version`` logs a models-from-code
pyfunc whose load waits while a "hold" file exists: a real model version that lets a
test keep a config update IN_PROGRESS for as long as it needs.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np

from pipeline import registry as reg
from pipeline.config import Config
from pipeline.model import P300Model, build_estimator, model_signature
from pipeline.model_code import model_code_paths
from pipeline.serving import ServerInfo, start_local_server, stop_local_server

GATED_MODEL_FILE = str(Path(__file__).with_name("gated_model.py"))
PARAMS_MODEL_FILE = str(Path(__file__).with_name("params_model.py"))


def pip_requirements() -> list[str]:
    """Stated, not inferred: MLflow's inference runs a subprocess that takes seconds per model."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "numpy", "pandas")]


def synthetic_epochs(n: int, n_features: int, seed: int, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Separable two-class float32 data: Target (2) epochs shifted on the first features."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.3, 2, 1)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    X[y == 2, : max(1, n_features // 4)] += shift
    return X, y


def register_p300_version(cfg: Config, n_features: int = 12, seed: int = 0, alias: str | None = None,
                          shift: float = 1.0) -> str:
    """Fit, log and register one P300Model version; returns its version number."""
    client = reg.mlflow_client(cfg)
    exp = reg.ensure_experiment(client, cfg, cfg.registry.experiment)
    X, y = synthetic_epochs(120, n_features, seed, shift)
    est = build_estimator().fit(X, y)
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=P300Model(est, n_features), code_paths=model_code_paths(),
            signature=model_signature(n_features), input_example=X[:2], pip_requirements=pip_requirements(),
            registered_model_name=cfg.registry.model_name)
    version = str(info.registered_model_version)
    if alias:
        client.set_registered_model_alias(cfg.registry.model_name, alias, version)
    return version


def register_gated_version(cfg: Config, hold_file: Path, alias: str | None = None) -> str:
    """A version whose load blocks while ``hold_file`` exists (at most 120 s)."""
    client = reg.mlflow_client(cfg)
    exp = reg.ensure_experiment(client, cfg, cfg.registry.experiment)
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=GATED_MODEL_FILE, model_config={"hold_file": str(hold_file)},
            pip_requirements=pip_requirements(), registered_model_name=cfg.registry.model_name)
    version = str(info.registered_model_version)
    if alias:
        client.set_registered_model_alias(cfg.registry.model_name, alias, version)
    return version


def register_params_version(cfg: Config, n_features: int, fast: bool = True) -> str:
    """A version whose signature declares params ``offset`` (double, 0.0) and ``subject_id``
    (long, -1); it predicts 0.5 + offset and label subject_id (tests/params_model.py)."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, n_features))]),
        outputs=Schema([ColSpec("double", "probability"), ColSpec("long", "label")]),
        params=ParamSchema([ParamSpec("offset", "double", 0.0), ParamSpec("subject_id", "long", -1)]))
    client = reg.mlflow_client(cfg)
    exp = reg.ensure_experiment(client, cfg, cfg.registry.experiment)
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=PARAMS_MODEL_FILE, model_config={"n_features": n_features, "fast": fast},
            signature=signature, pip_requirements=pip_requirements(), registered_model_name=cfg.registry.model_name)
    return str(info.registered_model_version)


def for_endpoint(cfg: Config, name: str) -> Config:
    """The same configuration with serving.endpoint_name = name."""
    return cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"endpoint_name": name})})


@contextlib.contextmanager
def running_server(cfg: Config) -> Iterator[ServerInfo]:
    """A real background server for ``cfg``'s root, stopped by its pid afterwards."""
    info = start_local_server(cfg)
    try:
        yield info
    finally:
        stop_local_server(cfg)
