"""MLflow tracking and model registry access, configured from Config only."""
from __future__ import annotations

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config import Config

__all__ = ["mlflow_client", "alias_version", "model_uri"]


def mlflow_client(cfg: Config) -> MlflowClient:
    """A client on the configured stores; also points MLflow's fluent API at them (the edge)."""
    if cfg.registry.tracking_uri is None:
        (cfg.local_root / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.registry_uri)
    return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri)


def alias_version(client: MlflowClient, cfg: Config, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    try:
        return client.get_model_version_by_alias(cfg.registry.model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def model_uri(cfg: Config, version: str | int) -> str:
    return f"models:/{cfg.registry.model_name}/{version}"
