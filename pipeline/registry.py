"""MLflow tracking and model registry access, configured from Config only.

The one module that knows registry conventions: aliases ``challenger``
and ``champion``, stages where the registry still has them (workspace registry,
SQLite, a tracking server) and none where it has not (Unity Catalog), and the
lineage each version's run records (training subjects, the features table and its
Delta version). Every job reads and writes the registry through these functions.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config import Config
from pipeline.registry_names import (CHALLENGER, CHAMPION, PARAM_FEATURES_TABLE, PARAM_FEATURES_VERSION,
                                     PARAM_N_FEATURES, PARAM_TRAINING_SUBJECTS, TAG_ALIGNMENT, TAG_CLASSIFIER,
                                     TAG_FINGERPRINT)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PARAM_TRAINING_SUBJECTS",
    "PARAM_FEATURES_TABLE",
    "PARAM_FEATURES_VERSION",
    "PARAM_N_FEATURES",
    "TAG_FINGERPRINT",
    "TAG_CLASSIFIER",
    "TAG_ALIGNMENT",
    "Lineage",
    "mlflow_client",
    "register_model",
    "ensure_experiment",
    "alias_version",
    "model_uri",
    "alias_uri",
    "get_version",
    "set_alias",
    "clear_alias",
    "registry_has_stages",
    "set_stage",
    "format_subjects",
    "parse_subjects",
    "training_subjects",
    "version_lineage",
    "find_version_by_tag",
]

_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")

# One SQLite store opened at a time in a process. MLflow runs alembic's upgrade each time it opens
# a SQL store (its table check predates its newer tables, so an up-to-date store looks new), and
# alembic keeps the migration context in module globals (``alembic.context.config``, ``.script``).
# MLflow serialises tracking stores and registry stores each with its own lock, not with each
# other: two threads opening one of each at once (the endpoint server's request threads and model
# loaders) fail with ``KeyError: 'script'`` or ``'config'``.
# Taken last (inside MLflow's own store locks), so it never waits for a lock its holder wants.
_STORE_OPEN = threading.RLock()
_QUIET = threading.Lock()  # mlflow_client's logging.disable and its restore, one thread at a time


def _sqlite_store(store_uri: str, artifact_uri: str | None = None) -> Any:
    """MLflow's SQL tracking store on a SQLite file, its default artifact root beside the file:
    MLflow's own default, ``./mlruns``, is a folder it makes in the working directory whenever a
    process opens the store."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = store_uri.split("sqlite:///", 1)[-1].split("?", 1)[0]
    if artifact_uri is None and db.startswith("/"):
        artifact_uri = (Path(db).parent / "artifacts").as_uri()
    with _STORE_OPEN:
        return SqlAlchemyStore(store_uri, artifact_uri or "./mlruns")


def _sqlite_registry_store(store_uri: str) -> Any:
    """MLflow's SQL model registry store on a SQLite file, opened under the same lock."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    with _STORE_OPEN:
        return SqlAlchemyStore(store_uri)


def mlflow_client(cfg: Config) -> MlflowClient:
    """A client on the configured stores; also points MLflow's fluent API at them (the edge)."""
    if cfg.registry.tracking_uri is None:
        (cfg.local_root / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.registry_uri)
    if not cfg.tracking_uri.startswith("sqlite:"):
        return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri)
    from mlflow.tracking._model_registry.utils import _get_store_registry
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    _tracking_store_registry.register("sqlite", _sqlite_store)  # MLflow's plugin hook for a URI scheme
    _get_store_registry().register("sqlite", _sqlite_registry_store)
    if not cfg.spark.quiet:  # p300 --verbose
        return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri)
    # MLflow's logging is configured now (importing it reset the levels set before): evaluation
    # hints that do not apply to static predictions, and the INFO line of every logged model
    # ("Validating input example against model signature"), stay out of normal output
    logging.getLogger("mlflow.models.evaluation").setLevel(logging.ERROR)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)
    # Each process that opens a SQLite store logs its schema checks and migrations at INFO
    # (alembic's own logging configuration, applied anew each time): quiet while both stores open.
    with _QUIET:  # logging.disable is process-wide: two threads must not interleave it
        return _quiet_client(cfg)


def _quiet_client(cfg: Config) -> MlflowClient:
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri)
        if cfg.registry_uri.startswith("sqlite:"):
            client.search_registered_models(max_results=1)  # opens the registry's store
    finally:
        logging.disable(previous)
    return client


def ensure_experiment(client: MlflowClient, cfg: Config, name: str) -> str:
    """Id of experiment ``name``, created (embedded store: artifacts under the root) or
    restored when missing or deleted; safe when two jobs create it at once."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=cfg.artifact_location)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def alias_version(client: MlflowClient, cfg: Config, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    try:
        return client.get_model_version_by_alias(cfg.registry.model_name, alias)
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return None
        raise


def model_uri(cfg: Config, version: str | int) -> str:
    return f"models:/{cfg.registry.model_name}/{version}"


def alias_uri(cfg: Config, alias: str) -> str:
    return f"models:/{cfg.registry.model_name}@{alias}"


def get_version(client: MlflowClient, cfg: Config, version: str | int) -> ModelVersion | None:
    """A version of the configured model, or None when it does not exist."""
    try:
        return client.get_model_version(cfg.registry.model_name, str(version))
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return None
        raise


def set_alias(client: MlflowClient, cfg: Config, alias: str, version: str | int) -> None:
    """Point ``alias`` at ``version`` (moves it if it pointed elsewhere)."""
    client.set_registered_model_alias(cfg.registry.model_name, alias, str(version))


def clear_alias(client: MlflowClient, cfg: Config, alias: str) -> bool:
    """Remove ``alias``; False (no error) when it was not set."""
    if alias_version(client, cfg, alias) is None:
        return False
    try:
        client.delete_registered_model_alias(cfg.registry.model_name, alias)
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return False
        raise
    return True


def registry_has_stages(cfg: Config) -> bool:
    """Unity Catalog has no stages; the workspace registry and open-source MLflow still do."""
    uri = (cfg.registry_uri or "").lower()
    return not (uri.startswith("databricks-uc") or uri.startswith("uc:"))


def set_stage(
    client: MlflowClient, cfg: Config, version: str | int, stage: str, archive_existing: bool = False
) -> bool:
    """Move a version to ``stage`` where the registry has stages; False (no error) where it
    has none or refuses them, so the same call works against Unity Catalog."""
    if not registry_has_stages(cfg):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated in MLflow 3, still served
            client.transition_model_version_stage(
                cfg.registry.model_name, str(version), stage, archive_existing_versions=archive_existing
            )
    except MlflowException as exc:
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "FEATURE_DISABLED", "ENDPOINT_NOT_FOUND",
                              "NOT_IMPLEMENTED"):
            return False
        raise
    return True


def format_subjects(subjects: list[int]) -> str:
    """[1, 2, 3, 5] -> '1,2,3,5' (what runs and version tags store)."""
    return ",".join(str(int(s)) for s in sorted(set(subjects)))


def parse_subjects(text: str | None) -> list[int]:
    if not text:
        return []
    text = text.strip()
    if text.startswith("["):
        return sorted(int(s) for s in json.loads(text))
    return sorted(int(s) for s in text.split(",") if s.strip())


@dataclass(frozen=True)
class Lineage:
    """What a registered version was trained from, read back from its run."""

    model_name: str
    version: str
    run_id: str | None
    training_subjects: list[int]
    features_table: str | None
    features_version: int | None
    n_features: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


def _run_or_none(client: MlflowClient, run_id: str | None) -> Any:
    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return None
        raise


def version_lineage(client: MlflowClient, version: ModelVersion) -> Lineage:
    """Lineage of a version: its run's params (the version's tags as fallback, e.g. when the
    run lives in another workspace)."""
    run = _run_or_none(client, version.run_id)
    params = dict(run.data.params) if run else {}
    tags = dict(version.tags or {})

    def pick(key: str) -> str | None:
        return params.get(key) or tags.get(key)

    table_version = pick(PARAM_FEATURES_VERSION)
    n_features = pick(PARAM_N_FEATURES)
    return Lineage(
        model_name=version.name,
        version=str(version.version),
        run_id=version.run_id,
        training_subjects=parse_subjects(pick(PARAM_TRAINING_SUBJECTS)),
        features_table=pick(PARAM_FEATURES_TABLE),
        features_version=int(table_version) if table_version not in (None, "", "None") else None,
        n_features=int(n_features) if n_features else None,
        metrics=dict(run.data.metrics) if run else {},
        aliases=list(getattr(version, "aliases", None) or []),
    )


def training_subjects(client: MlflowClient, version: ModelVersion) -> list[int]:
    """Subject ids a version was trained on (what evaluation must hold out)."""
    return version_lineage(client, version).training_subjects


def find_version_by_tag(client: MlflowClient, cfg: Config, key: str, value: str) -> ModelVersion | None:
    """Newest version of the configured model whose tag ``key`` equals ``value`` (None if none,
    or the model does not exist yet). Filters client-side: not every registry filters on tags."""
    try:
        versions = client.search_model_versions(f"name = '{cfg.registry.model_name}'")
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return None
        raise
    # newest first; Unity Catalog's search results (ModelVersionSearch) carry no tags or
    # aliases, so those are read from get_model_version, one version at a time
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = v.tags if isinstance(v.tags, dict) else None
        full = None
        if tags is None:
            full = client.get_model_version(v.name, v.version)
            tags = full.tags
        if (tags or {}).get(key) == value:
            return full or client.get_model_version(v.name, v.version)  # with aliases filled in
    return None


# what mlflow.register_model prints itself (to stderr, not through logging); the caller reports
# the version it registered
_REGISTER_NOTICES = ("Successfully registered model ", "Registered model ", "Created version ")


class _WithoutLines(io.TextIOBase):
    """A text stream that forwards every line to ``target`` except those starting with ``prefixes``."""

    def __init__(self, target: Any, prefixes: tuple[str, ...]) -> None:
        self.target, self.prefixes, self.pending = target, prefixes, ""

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            if not line.startswith(self.prefixes):
                self.target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        if self.pending and not self.pending.startswith(self.prefixes):
            self.target.write(self.pending)
        self.pending = ""
        self.flush()


def register_model(cfg: Config, model_uri: str, tags: dict[str, str]) -> ModelVersion:
    """``mlflow.register_model`` under ``registry.model_name``, without MLflow's own notices
    on stderr unless --verbose (the caller reports the version); anything else MLflow prints passes."""
    if not cfg.spark.quiet:
        return mlflow.register_model(model_uri, cfg.registry.model_name, tags=tags)
    stream = _WithoutLines(sys.stderr, _REGISTER_NOTICES)
    try:
        with contextlib.redirect_stderr(stream):
            return mlflow.register_model(model_uri, cfg.registry.model_name, tags=tags)
    finally:
        stream.close()
