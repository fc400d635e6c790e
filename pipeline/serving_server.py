"""The local model-serving endpoint server: the Databricks serving-endpoints REST subset.

A real HTTP server (FastAPI on uvicorn) that holds named endpoints, each serving MLflow
model versions under served-entity names (``champion``, ``challenger``) with a traffic
split, and answers the routes that databricks-sdk's ``serving_endpoints`` API and the
invocation clients call (DESIGN.md, "Serving contract"):

    GET    /.well-known/databricks-config                 {} (the SDK's discovery probe; no auth)
    GET    /health                                        liveness, pid, endpoint count
    GET    /api/2.0/serving-endpoints                     list
    POST   /api/2.0/serving-endpoints                     create (config loads in the background)
    GET    /api/2.0/serving-endpoints/{name}              state.ready / state.config_update, config, pending_config
    DELETE /api/2.0/serving-endpoints/{name}
    PUT    /api/2.0/serving-endpoints/{name}/config       update: 409 while another update is in progress
    POST   /serving-endpoints/{name}/invocations          routed by traffic_config
    POST   /serving-endpoints/{name}/served-models/{served}/invocations   direct

A config update loads every new model version (and warms it up) before it swaps the
endpoint's active config in one reference assignment; requests read that reference
once, so a request in flight finishes on the config it started with and none fails.
Endpoint configs persist in ``<root>/serving/endpoints.json`` and are restored on start.

Invocation bodies: ``inputs`` / ``instances`` (the fast path: JSON straight into a
float32 matrix, no pandas, handed to the model's ``predict_matrix``), ``dataframe_split``
and ``dataframe_records``. Anything malformed gets a 4xx naming the problem; no request
can take the server down.

Security: binds 127.0.0.1 by default; any other address needs ``serving.token``, and
with a token every route (the discovery probe aside) checks ``Authorization: Bearer``.
"""
from __future__ import annotations

import argparse
import fcntl
import hmac
import ipaddress
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import Request  # module level: FastAPI resolves the (string) annotations of handlers here
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from pipeline.config import Config, ConfigError
from pipeline.inference_log import client_request_id, open_inference_log

try:  # 5x faster than json on a 100-epoch `inputs` body (4 ms vs 21 ms for 2.3 MB on 2 cores)
    import orjson
except ImportError:  # pragma: no cover - pinned in requirements.txt; json is the fallback
    orjson = None

__all__ = [
    "ApiError",
    "EntitySpec",
    "ConfigSpec",
    "EndpointStore",
    "create_app",
    "is_loopback",
    "check_bind",
    "serve",
    "main",
    "STATE_FILE",
    "ENDPOINTS_FILE",
    "LOCK_FILE",
]

STATE_FILE = "server.json"        # pid, host, port, url, token of the running server
ENDPOINTS_FILE = "endpoints.json"  # endpoint configs, restored on start
LOCK_FILE = "server.lock"          # held (flock) by the one server of a root
DISCOVERY_PATH = "/.well-known/databricks-config"
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
_INLINE_BODY_BYTES = 4 << 20  # larger bodies are parsed off the event loop
_NOT_UPDATING, _IN_PROGRESS, _UPDATE_FAILED = "NOT_UPDATING", "IN_PROGRESS", "UPDATE_FAILED"


def _now_ms() -> int:
    return int(time.time() * 1000)


class ApiError(Exception):
    """An error answered as Databricks does: HTTP status + {"error_code", "message"}."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def _bad(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


# ---- endpoint configuration ------------------------------------------------------------


@dataclass(frozen=True)
class EntitySpec:
    """One served entity: a registered model version under a name."""

    name: str
    entity_name: str
    entity_version: str
    workload_size: str = "Small"
    scale_to_zero_enabled: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.entity_name, self.entity_version)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "entity_name": self.entity_name, "entity_version": self.entity_version,
                "workload_size": self.workload_size, "scale_to_zero_enabled": self.scale_to_zero_enabled}


@dataclass(frozen=True)
class ConfigSpec:
    """An endpoint's served entities and traffic routes (percentages summing to 100)."""

    entities: tuple[EntitySpec, ...]
    routes: tuple[tuple[str, int], ...]

    @classmethod
    def from_request(cls, body: Any, where: str = "config") -> "ConfigSpec":
        """Validate a request's config (``served_entities`` or the older ``served_models``)."""
        if not isinstance(body, dict):
            raise _bad(f"{where} must be an object")
        raw = body.get("served_entities")
        legacy = body.get("served_models")
        if raw is None and legacy is not None:
            raw = [{"name": m.get("name"), "entity_name": m.get("model_name"), "entity_version": m.get("model_version"),
                    "workload_size": m.get("workload_size"), "scale_to_zero_enabled": m.get("scale_to_zero_enabled")}
                   if isinstance(m, dict) else m for m in legacy]
        if not isinstance(raw, list) or not raw:
            raise _bad(f"{where}.served_entities must be a non-empty list")
        entities: list[EntitySpec] = []
        for i, item in enumerate(raw):
            at = f"{where}.served_entities[{i}]"
            if not isinstance(item, dict):
                raise _bad(f"{at} must be an object")
            entity_name, version = item.get("entity_name"), item.get("entity_version")
            if not isinstance(entity_name, str) or not entity_name:
                raise _bad(f"{at}.entity_name is required (a registered model name)")
            if isinstance(version, int) and not isinstance(version, bool):
                version = str(version)
            if not isinstance(version, str) or not version.isdigit():
                raise _bad(f"{at}.entity_version is required (a model version number), got {version!r}")
            name = item.get("name") or f"{entity_name.split('.')[-1]}-{version}"
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise _bad(f"{at}.name {name!r}: letters, digits, '-' and '_' only (at most 63)")
            size = item.get("workload_size") or "Small"
            if size not in ("Small", "Medium", "Large"):
                raise _bad(f"{at}.workload_size must be Small, Medium or Large, got {size!r}")
            scale = item.get("scale_to_zero_enabled")
            entities.append(EntitySpec(name, entity_name, version, size, True if scale is None else bool(scale)))
        names = [e.name for e in entities]
        if len(set(names)) != len(names):
            raise _bad(f"{where}: served entity names must be unique, got {names}")
        traffic = body.get("traffic_config")
        routes: list[tuple[str, int]] = []
        if traffic is not None and not isinstance(traffic, dict):
            raise _bad(f"{where}.traffic_config must be an object with 'routes'")
        if traffic and traffic.get("routes") is not None:
            if not isinstance(traffic["routes"], list):
                raise _bad(f"{where}.traffic_config.routes must be a list")
            for j, route in enumerate(traffic["routes"]):
                at = f"{where}.traffic_config.routes[{j}]"
                if not isinstance(route, dict):
                    raise _bad(f"{at} must be an object")
                target = route.get("served_entity_name") or route.get("served_model_name")
                pct = route.get("traffic_percentage")
                if target not in names:
                    raise _bad(f"{at} names served entity {target!r}, which is not one of {names}")
                if not isinstance(pct, int) or isinstance(pct, bool) or not 0 <= pct <= 100:
                    raise _bad(f"{at}.traffic_percentage must be an integer in 0..100, got {pct!r}")
                routes.append((target, pct))
            if len({t for t, _ in routes}) != len(routes):
                raise _bad(f"{where}.traffic_config: one route per served entity")
            if sum(p for _, p in routes) != 100:
                raise _bad(f"{where}.traffic_config: percentages must sum to 100, got {sum(p for _, p in routes)}")
        else:  # no routes: split evenly (the first entities take the remainder)
            share, extra = divmod(100, len(names))
            routes = [(n, share + (1 if i < extra else 0)) for i, n in enumerate(names)]
        return cls(tuple(entities), tuple(routes))

    def to_dict(self) -> dict[str, Any]:
        return {"served_entities": [e.to_dict() for e in self.entities],
                "traffic_config": {"routes": [{"served_entity_name": n, "traffic_percentage": p}
                                              for n, p in self.routes]}}


# ---- loaded models ---------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A model version in memory: the pyfunc, and ``predict_matrix`` when it has one."""

    entity_name: str
    version: str
    pyfunc: Any
    fast: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None
    n_features: int | None
    loaded_at: float = field(default_factory=time.time)


def _signature_width(pyfunc: Any) -> int | None:
    """Feature count from a model's input signature (one tensor, or named columns)."""
    try:
        schema = pyfunc.metadata.get_input_schema()
    except Exception:  # no signature
        return None
    if schema is None:
        return None
    if schema.is_tensor_spec():
        shape = schema.inputs[0].shape if len(schema.inputs) == 1 else None
        return int(shape[-1]) if shape and len(shape) == 2 and shape[-1] > 0 else None
    return len(schema.inputs)


def load_model(entity_name: str, version: str) -> LoadedModel:
    """Load ``models:/entity_name/version`` and warm it up (the first call pays import costs)."""
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(f"models:/{entity_name}/{version}")
    fast = None
    n_features = None
    try:
        inner = pyfunc.unwrap_python_model()
    except Exception:  # not a python_model flavor: served through pyfunc.predict
        inner = None
    if inner is not None and callable(getattr(inner, "predict_matrix", None)) and getattr(inner, "n_features", None):
        fast = inner.predict_matrix
        n_features = int(inner.n_features)
    else:
        n_features = _signature_width(pyfunc)
    model = LoadedModel(entity_name, version, pyfunc, fast, n_features)
    if fast is not None:
        fast(np.zeros((1, n_features), dtype=np.float32))
    return model


# ---- request bodies -> model input -----------------------------------------------------


def _numeric_matrix(rows: Any, what: str) -> np.ndarray:
    """Rows of numbers as a float matrix; strings, nulls, booleans and ragged rows rejected."""
    try:
        arr = np.asarray(rows)
    except (ValueError, TypeError) as exc:  # ragged nesting
        raise ApiError(400, "BAD_REQUEST", f"{what}: rows must all have the same length ({exc})") from None
    if arr.dtype.kind not in "fiu":
        if arr.dtype == object:
            found = "null, an object, a nested list or a ragged row"
        else:
            kind = {"U": "strings", "b": "booleans"}.get(arr.dtype.kind, arr.dtype.name)
            found = f"{kind}, e.g. {arr.flat[0]!r}" if arr.size else kind
        raise ApiError(400, "BAD_REQUEST", f"{what}: values must be numbers (found {found})")
    return arr


def _features_of_rows(rows: Any, what: str) -> np.ndarray:
    """A batch from JSON rows: each row a list of numbers, or one array cell (an 'features' column)."""
    if not isinstance(rows, list):
        raise ApiError(400, "BAD_REQUEST", f"{what} must be a list of rows, got {type(rows).__name__}")
    if not rows:
        raise ApiError(400, "BAD_REQUEST", f"{what}: empty batch (no rows)")
    first = rows[0]
    if isinstance(first, list) and len(first) == 1 and isinstance(first[0], list):
        try:
            rows = [r[0] for r in rows]
        except (TypeError, IndexError, KeyError):
            raise ApiError(400, "BAD_REQUEST", f"{what}: every row must hold one array of features") from None
    return _numeric_matrix(rows, what)


def parse_inputs(payload: dict[str, Any]) -> tuple[str, Any]:
    """(format, data) of an invocation body; rows for the fast formats, a DataFrame spec otherwise."""
    for key in ("inputs", "instances"):
        if key in payload:
            data = payload[key]
            if isinstance(data, dict):  # named tensors: one accepted
                if len(data) != 1:
                    raise ApiError(400, "BAD_REQUEST", f"{key}: expected one tensor, got {sorted(data)}")
                data = next(iter(data.values()))
            return key, data
    if "dataframe_split" in payload:
        split = payload["dataframe_split"]
        if not isinstance(split, dict) or "data" not in split:
            raise ApiError(400, "BAD_REQUEST", "dataframe_split must be an object with 'data' (and 'columns')")
        return "dataframe_split", split
    if "dataframe_records" in payload:
        return "dataframe_records", payload["dataframe_records"]
    raise ApiError(400, "BAD_REQUEST", "the body must have one of 'inputs', 'instances', 'dataframe_split', "
                                       f"'dataframe_records'; got keys {sorted(payload)[:10]}")


def _records_rows(records: Any) -> tuple[list[str], list[list[Any]]]:
    if not isinstance(records, list):
        raise ApiError(400, "BAD_REQUEST", "dataframe_records must be a list of objects")
    if not records:
        raise ApiError(400, "BAD_REQUEST", "dataframe_records: empty batch (no records)")
    if not isinstance(records[0], dict):
        raise ApiError(400, "BAD_REQUEST", "dataframe_records must be a list of objects")
    columns = list(records[0])
    try:
        return columns, [[r[c] for c in columns] for r in records]
    except (KeyError, TypeError):
        bad = next(i for i, r in enumerate(records) if not isinstance(r, dict) or any(c not in r for c in columns))
        raise ApiError(400, "BAD_REQUEST", f"dataframe_records[{bad}] is not an object with the columns "
                                           f"of record 0") from None


def to_matrix(fmt: str, data: Any, n_features: int | None) -> np.ndarray:
    """A validated float32 (n, n_features) matrix from any accepted format (fast models)."""
    if fmt == "dataframe_split":
        rows = data["data"]
    elif fmt == "dataframe_records":
        rows = _records_rows(data)[1]
    else:
        rows = data
    matrix = _features_of_rows(rows, fmt)
    if matrix.ndim == 1 and n_features and matrix.size == n_features and fmt in ("inputs", "instances"):
        matrix = matrix[None, :]
    if matrix.ndim != 2:
        raise ApiError(400, "BAD_REQUEST", f"{fmt}: expected a batch of shape (n, {n_features or 'features'}), "
                                           f"got shape {matrix.shape}")
    if n_features is not None and matrix.shape[1] != n_features:
        raise ApiError(400, "BAD_REQUEST", f"{fmt}: expected {n_features} features per epoch, got {matrix.shape[1]}")
    with np.errstate(over="ignore"):
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if not np.isfinite(matrix).all():
        row = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise ApiError(400, "BAD_REQUEST", f"{fmt}: NaN or infinite value (or beyond float32) in row {row}")
    return matrix


def _generic_input(fmt: str, data: Any) -> Any:
    """Model input for pyfunc.predict (models without predict_matrix): ndarray or DataFrame."""
    import pandas as pd

    if fmt in ("inputs", "instances"):
        return _features_of_rows(data, fmt) if isinstance(data, list) else data
    if fmt == "dataframe_split":
        columns = data.get("columns")
        rows = data["data"]
        if not isinstance(rows, list) or not rows:
            raise ApiError(400, "BAD_REQUEST", "dataframe_split: empty batch (no rows)")
        try:
            return pd.DataFrame(rows, columns=columns)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, "BAD_REQUEST", f"dataframe_split: {exc}") from None
    columns, rows = _records_rows(data)
    return pd.DataFrame(rows, columns=columns)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def predictions_body(output: Any) -> list[Any]:
    """MLflow's response shape: DataFrame -> records, arrays and series -> lists."""
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        return output.to_dict(orient="records")
    if isinstance(output, (pd.Series, np.ndarray)):
        return output.tolist()
    return output


# ---- endpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveConfig:
    """What an endpoint serves now; replaced whole, never mutated (the hot swap)."""

    spec: ConfigSpec
    version: int
    models: dict[str, LoadedModel]
    ready_at: dict[str, int]
    _cumulative: tuple[tuple[int, str], ...] = ()

    @classmethod
    def build(cls, spec: ConfigSpec, version: int, models: dict[str, LoadedModel],
              ready_at: dict[str, int]) -> "ActiveConfig":
        total, cumulative = 0, []
        for name, pct in spec.routes:
            if pct > 0:
                total += pct
                cumulative.append((total, name))
        return cls(spec, version, models, ready_at, tuple(cumulative))

    def route(self) -> str:
        draw = random.random() * 100
        for bound, name in self._cumulative:
            if draw < bound:
                return name
        return self._cumulative[-1][1]


@dataclass
class Pending:
    spec: ConfigSpec
    version: int
    start_time: int
    failed: str | None = None


@dataclass
class Endpoint:
    name: str
    id: str
    creation_timestamp: int
    last_updated_timestamp: int
    active: ActiveConfig | None = None
    pending: Pending | None = None
    config_version: int = 0  # of the last accepted config

    @property
    def update_state(self) -> str:
        if self.pending is None:
            return _NOT_UPDATING
        return _UPDATE_FAILED if self.pending.failed else _IN_PROGRESS

    def describe(self) -> dict[str, Any]:
        """The endpoint as Databricks' GET returns it (ServingEndpointDetailed)."""
        out: dict[str, Any] = {
            "name": self.name, "id": self.id, "creator": "local",
            "creation_timestamp": self.creation_timestamp, "last_updated_timestamp": self.last_updated_timestamp,
            "state": {"ready": "READY" if self.active is not None else "NOT_READY",
                      "config_update": self.update_state},
            "permission_level": "CAN_MANAGE", "route_optimized": False,
        }
        if self.active is not None:
            out["config"] = _config_out(self.active.spec, self.active.version,
                                        {n: ("DEPLOYMENT_READY", f"Served model version {m.version} is ready.")
                                         for n, m in self.active.models.items()}, self.active.ready_at)
        if self.pending is not None:
            p = self.pending
            state = ("DEPLOYMENT_FAILED", p.failed) if p.failed else ("DEPLOYMENT_CREATING", "Loading the model version.")
            pending = _config_out(p.spec, p.version, {e.name: state for e in p.spec.entities},
                                  {e.name: p.start_time for e in p.spec.entities})
            pending["start_time"] = p.start_time
            out["pending_config"] = pending
        return out


def _config_out(spec: ConfigSpec, version: int, states: dict[str, tuple[str, str]],
                created: dict[str, int]) -> dict[str, Any]:
    entities, models = [], []
    for e in spec.entities:
        deployment, message = states.get(e.name, ("DEPLOYMENT_CREATING", ""))
        state = {"deployment": deployment, "deployment_state_message": message}
        entities.append({**e.to_dict(), "creator": "local", "creation_timestamp": created.get(e.name), "state": state})
        models.append({"name": e.name, "model_name": e.entity_name, "model_version": e.entity_version,
                       "workload_size": e.workload_size, "scale_to_zero_enabled": e.scale_to_zero_enabled,
                       "creator": "local", "creation_timestamp": created.get(e.name), "state": state})
    routes = [{"served_entity_name": n, "served_model_name": n, "traffic_percentage": p} for n, p in spec.routes]
    return {"config_version": version, "served_entities": entities, "served_models": models,
            "traffic_config": {"routes": routes}}


class EndpointStore:
    """All endpoints of one server, their model cache, loader threads and persistence."""

    def __init__(self, cfg: Config, state_dir: Path, log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.endpoints: dict[str, Endpoint] = {}
        self._lock = threading.RLock()
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._log = log or (lambda msg: print(f"[p300-serving] {msg}", file=sys.stderr, flush=True))
        self._registry: Any = None

    # -- registry ----------------------------------------------------------------------
    def _client(self) -> Any:
        if self._registry is None:
            from pipeline.registry import mlflow_client

            self._registry = mlflow_client(self.cfg)
        return self._registry

    def check_versions(self, spec: ConfigSpec) -> None:
        """Unknown model versions are refused at once (404), not discovered by the loader."""
        from mlflow.exceptions import MlflowException

        client = self._client()
        for e in spec.entities:
            try:
                client.get_model_version(e.entity_name, e.entity_version)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
                    raise ApiError(404, "RESOURCE_DOES_NOT_EXIST",
                                   f"served entity {e.name!r}: model {e.entity_name!r} version {e.entity_version} "
                                   f"does not exist in the registry") from None
                raise

    # -- lifecycle ---------------------------------------------------------------------
    def create(self, name: Any, spec_body: Any) -> dict[str, Any]:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise _bad(f"name {name!r}: an endpoint name has 1-63 letters, digits, '-' or '_'")
        spec = ConfigSpec.from_request(spec_body)
        self.check_versions(spec)
        with self._lock:
            if name in self.endpoints:
                raise ApiError(409, "RESOURCE_ALREADY_EXISTS", f"Endpoint with name '{name}' already exists.")
            now = _now_ms()
            ep = Endpoint(name=name, id=uuid.uuid4().hex, creation_timestamp=now, last_updated_timestamp=now)
            self.endpoints[name] = ep
            self._start_update(ep, spec)
            self._persist()
            return ep.describe()

    def update(self, name: str, spec_body: Any) -> dict[str, Any]:
        spec = ConfigSpec.from_request(spec_body, where="body")
        self.check_versions(spec)
        with self._lock:
            ep = self.get(name)
            if ep.update_state == _IN_PROGRESS:
                raise ApiError(409, "RESOURCE_CONFLICT",
                               f"Endpoint '{name}' is currently being updated (config version "
                               f"{ep.pending.version if ep.pending else '?'}); retry when its config_update state "
                               f"is NOT_UPDATING.")
            self._start_update(ep, spec)
            return ep.describe()

    def delete(self, name: str) -> None:
        with self._lock:
            self.get(name)
            del self.endpoints[name]
            self._persist()
            self._evict()

    def get(self, name: str) -> Endpoint:
        ep = self.endpoints.get(name)
        if ep is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Endpoint with name '{name}' does not exist.")
        return ep

    def _start_update(self, ep: Endpoint, spec: ConfigSpec) -> None:
        ep.config_version += 1
        ep.pending = Pending(spec, ep.config_version, _now_ms())
        ep.last_updated_timestamp = ep.pending.start_time
        # a daemon thread per update (one at a time per endpoint): a stuck load never blocks shutdown
        threading.Thread(target=self._apply, args=(ep, ep.pending), name=f"load-{ep.name}", daemon=True).start()

    def _model(self, entity_name: str, version: str) -> LoadedModel:
        key = (entity_name, version)
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one load per version, even when two endpoints want it at once
            with self._lock:
                if key in self._models:
                    return self._models[key]
            t0 = time.perf_counter()
            model = load_model(entity_name, version)
            self._log(f"loaded {entity_name} version {version} in {time.perf_counter() - t0:.1f}s "
                      f"({'predict_matrix fast path' if model.fast else 'pyfunc predict'})")
            with self._lock:
                self._models[key] = model
            return model

    def _apply(self, ep: Endpoint, pending: Pending) -> None:
        """Load every model of the new config first, then swap the active config at once."""
        try:
            models = {e.name: self._model(e.entity_name, e.entity_version) for e in pending.spec.entities}
        except Exception as exc:  # noqa: BLE001 - reported through the endpoint's state
            reason = f"{type(exc).__name__}: {exc}"
            self._log(f"endpoint {ep.name}: config version {pending.version} failed to load: {reason}")
            with self._lock:
                if ep.pending is pending:
                    pending.failed = f"Failed to load the model version: {reason}"
            return
        with self._lock:
            if self.endpoints.get(ep.name) is not ep or ep.pending is not pending:
                return  # deleted (or superseded) while loading
            now = _now_ms()
            previous = ep.active.ready_at if ep.active else {}
            old_models = ep.active.models if ep.active else {}
            ready_at = {n: previous[n] if n in old_models and old_models[n] is models[n] else now for n in models}
            ep.active = ActiveConfig.build(pending.spec, pending.version, models, ready_at)  # the swap
            ep.pending = None
            ep.last_updated_timestamp = now
            self._persist()
            self._evict()
        served = ", ".join(f"{e.name}={e.entity_name}/{e.entity_version}" for e in pending.spec.entities)
        self._log(f"endpoint {ep.name}: config version {pending.version} serving {served}")

    def _evict(self) -> None:
        with self._lock:
            wanted = set()
            for ep in self.endpoints.values():
                for spec in ([ep.active.spec] if ep.active else []) + ([ep.pending.spec] if ep.pending else []):
                    wanted.update(e.key for e in spec.entities)
            for key in [k for k in self._models if k not in wanted]:
                del self._models[key]

    # -- persistence -------------------------------------------------------------------
    @property
    def endpoints_file(self) -> Path:
        return self.state_dir / ENDPOINTS_FILE

    def _persist(self) -> None:
        records = []
        for ep in self.endpoints.values():
            records.append({"name": ep.name, "id": ep.id, "creation_timestamp": ep.creation_timestamp,
                            "last_updated_timestamp": ep.last_updated_timestamp,
                            "config_version": ep.active.version if ep.active else 0,
                            "config": ep.active.spec.to_dict() if ep.active else
                            (ep.pending.spec.to_dict() if ep.pending else None)})
        _write_json(self.endpoints_file, {"endpoints": records})

    def restore(self) -> int:
        """Recreate persisted endpoints; their models load in the background (NOT_READY until then)."""
        if not self.endpoints_file.exists():
            return 0
        try:
            records = json.loads(self.endpoints_file.read_text())["endpoints"]
        except (ValueError, KeyError, TypeError) as exc:
            self._log(f"ignoring unreadable {self.endpoints_file}: {exc}")
            return 0
        with self._lock:
            for rec in records:
                ep = Endpoint(name=rec["name"], id=rec.get("id") or uuid.uuid4().hex,
                              creation_timestamp=rec.get("creation_timestamp") or _now_ms(),
                              last_updated_timestamp=rec.get("last_updated_timestamp") or _now_ms(),
                              config_version=max(int(rec.get("config_version") or 1), 1) - 1)
                self.endpoints[ep.name] = ep
                if rec.get("config"):
                    try:
                        self._start_update(ep, ConfigSpec.from_request(rec["config"]))
                    except ApiError as exc:
                        self._log(f"endpoint {ep.name}: persisted config is invalid: {exc.message}")
        self._log(f"restored {len(records)} endpoint(s) from {self.endpoints_file}")
        return len(records)


def _write_json(path: Path, data: Any, private: bool = False) -> None:
    """Atomic write (tmp + rename); ``private`` files are readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


# ---- the HTTP application ----------------------------------------------------------------


def _error_response(status: int, error_code: str, message: str) -> Response:
    return Response(json.dumps({"error_code": error_code, "message": message}), status_code=status,
                    media_type="application/json")


class BearerAuth:
    """ASGI wrapper: with a token, every HTTP request (the discovery probe aside) needs it."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.expected is not None and scope["type"] == "http" and scope["path"] != DISCOVERY_PATH:
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps({"error_code": "UNAUTHENTICATED",
                                   "message": "missing or wrong bearer token (Authorization: Bearer <serving.token>)"})
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


async def _read_body(request: Any, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before reading when the length is declared)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ApiError(413, "REQUEST_TOO_LARGE",
                               f"request body of {int(declared)} bytes exceeds serving.max_body_mb "
                               f"({limit / 2**20:g} MiB); send smaller batches")
        except ValueError:
            raise ApiError(400, "BAD_REQUEST", "invalid Content-Length header") from None
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "REQUEST_TOO_LARGE", f"request body exceeds serving.max_body_mb "
                                                         f"({limit / 2**20:g} MiB); send smaller batches")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "BAD_REQUEST", "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def _load_json(body: bytes, what: str) -> Any:
    if not body:
        raise ApiError(400, "MALFORMED_REQUEST", f"{what}: empty body, expected JSON")
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity literals (Python's json writes them), huge numbers, or broken JSON: json decides
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "MALFORMED_REQUEST", f"{what}: body is not valid JSON ({str(exc)[:200]})") from None


def _score(model: LoadedModel, payload: Any) -> bytes:
    """Parse, validate, predict, encode: the CPU part of an invocation."""
    if not isinstance(payload, dict):
        raise ApiError(400, "BAD_REQUEST", f"the body must be a JSON object, got {type(payload).__name__}")
    fmt, data = parse_inputs(payload)
    if model.fast is not None:
        matrix = to_matrix(fmt, data, model.n_features)
        proba, labels = model.fast(matrix)
        preds = [{"probability": p, "label": l} for p, l in zip(proba.tolist(), labels.tolist())]
        return orjson.dumps({"predictions": preds}) if orjson is not None else json.dumps({"predictions": preds}).encode()
    try:
        output = model.pyfunc.predict(_generic_input(fmt, data))
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - schema enforcement and model errors are the caller's input
        from mlflow.exceptions import MlflowException

        if isinstance(exc, (MlflowException, ValueError, TypeError, KeyError)):
            raise ApiError(400, "BAD_REQUEST", f"{type(exc).__name__}: {str(exc)[:500]}") from None
        raise
    return json.dumps({"predictions": predictions_body(output)}, default=_json_default).encode()


def create_app(store: EndpointStore, token: str | None = None, max_body_mb: float = 64.0,
               inference_log: Any = None) -> Any:
    """The ASGI app (FastAPI), wrapped by the bearer check when a token is set."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.responses import JSONResponse

    limit = int(max_body_mb * 2**20)
    app = FastAPI(title="p300 local serving endpoint", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _error_response(exc.status, exc.error_code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "ENDPOINT_NOT_FOUND", 405: "BAD_REQUEST"}.get(exc.status_code, "BAD_REQUEST")
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return _error_response(exc.status_code, code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error_response(400, "BAD_REQUEST", str(exc)[:500])

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        store._log(f"internal error on {request.method} {request.url.path}: "
                   f"{''.join(traceback.format_exception(exc))[-2000:]}")
        return _error_response(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {str(exc)[:300]}")

    @app.get(DISCOVERY_PATH)
    async def discovery() -> Response:
        return JSONResponse({})  # nothing to discover: the SDK keeps its explicit configuration

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse({"status": "ok", "pid": os.getpid(), "endpoints": len(store.endpoints)})

    @app.get("/api/2.0/serving-endpoints")
    async def list_endpoints() -> Response:
        return JSONResponse({"endpoints": [ep.describe() for ep in list(store.endpoints.values())]})

    @app.post("/api/2.0/serving-endpoints")
    async def create(request: Request) -> Response:
        body = _load_json(await _read_body(request, limit), "create")
        if not isinstance(body, dict):
            raise _bad("create: the body must be a JSON object")
        return JSONResponse(await run_in_threadpool(store.create, body.get("name"), body.get("config")))

    @app.get("/api/2.0/serving-endpoints/{name}")
    async def get(name: str) -> Response:
        return JSONResponse(store.get(name).describe())

    @app.delete("/api/2.0/serving-endpoints/{name}")
    async def delete(name: str) -> Response:
        store.delete(name)
        return JSONResponse({})

    @app.put("/api/2.0/serving-endpoints/{name}/config")
    async def update(name: str, request: Request) -> Response:
        body = _load_json(await _read_body(request, limit), "update config")
        store.get(name)
        return JSONResponse(await run_in_threadpool(store.update, name, body))

    async def _invoke(request: Request, name: str, served: str | None) -> Response:
        body = await _read_body(request, limit)
        ep = store.get(name)
        active = ep.active  # read once: the whole request uses this config
        if active is None:
            raise ApiError(503, "TEMPORARILY_UNAVAILABLE", f"Endpoint '{name}' is not ready yet (its config is "
                                                           f"loading); retry shortly.")
        target = served if served is not None else active.route()
        model = active.models.get(target)
        if model is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST",
                           f"Endpoint '{name}' has no served model '{target}' (serves {sorted(active.models)})")
        started, t0, payload = _now_ms(), time.perf_counter(), None

        def parse_and_score() -> bytes:
            nonlocal payload
            payload = _load_json(body, "invocation")
            return _score(model, payload)

        def logged(status: int, out: bytes) -> None:  # the inference log, before the answer goes out
            if inference_log is not None:
                inference_log.record(body, out, status_code=status, timestamp_ms=started,
                                     execution_time_ms=int((time.perf_counter() - t0) * 1000), endpoint_name=name,
                                     served_entity_name=target, model_name=model.entity_name,
                                     model_version=model.version, client_request_id=client_request_id(payload))
        try:
            if len(body) <= _INLINE_BODY_BYTES:  # small: no thread hop
                out = parse_and_score()
            else:  # large: keep the event loop free for other requests
                out = await run_in_threadpool(parse_and_score)
        except ApiError as exc:
            logged(exc.status, json.dumps({"error_code": exc.error_code, "message": exc.message}).encode())
            raise
        except Exception as exc:  # noqa: BLE001 - a model error answers 500; the server stays up
            store._log(f"{name}/{target}: {''.join(traceback.format_exception(exc))[-2000:]}")
            error = ApiError(500, "INTERNAL_ERROR", f"model {model.entity_name}/{model.version} failed: "
                                                    f"{type(exc).__name__}: {str(exc)[:300]}")
            logged(500, json.dumps({"error_code": error.error_code, "message": error.message}).encode())
            raise error from None
        logged(200, out)
        return Response(out, media_type="application/json",
                        headers={"x-served-entity": target, "x-served-version": model.version})

    @app.post("/serving-endpoints/{name}/invocations")
    async def invoke(name: str, request: Request) -> Response:
        return await _invoke(request, name, None)

    @app.post("/serving-endpoints/{name}/served-models/{served}/invocations")
    async def invoke_served(name: str, served: str, request: Request) -> Response:
        return await _invoke(request, name, served)

    return BearerAuth(app, token) if token else app


# ---- running it ------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Loopback needs nothing; any other address needs a token (every route then checks it)."""
    if not is_loopback(host) and not token:
        raise ConfigError(f"binding the serving endpoint to {host!r} (not loopback) requires a token: "
                          f"set serving.token (--set serving.token=... or P300__SERVING__TOKEN)")


def _server_class() -> type:
    import uvicorn

    class _Server(uvicorn.Server):
        """Stops gracefully on SIGINT/SIGTERM and returns (uvicorn would re-raise the signal after
        its shutdown, killing the process before the state file is cleaned up)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    return _Server


def serve(cfg: Config, host: str | None = None, port: int | None = None,
          log: Callable[[str], None] | None = None) -> int:
    """Run the server in the foreground until SIGINT/SIGTERM; 0 on a clean stop."""
    import uvicorn

    host = host or cfg.serving.host
    port = cfg.serving.port if port is None else port
    token = cfg.serving.token
    check_bind(host, token)
    say = log or (lambda msg: print(f"[p300-serving] {msg}", file=sys.stderr, flush=True))
    state_dir = cfg.serving_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    lock_fh = open(state_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_fh.close()
        running = _read_state(state_dir)
        where = f" (pid {running.get('pid')}, {running.get('url')})" if running else ""
        raise ConfigError(f"a serving endpoint server already runs for root {cfg.root}{where}; "
                          f"stop it with `p300 endpoint stop`") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on TCP-proto sockets, and without it
    # Nagle + delayed ACKs add ~40 ms to a response written in two parts
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        lock_fh.close()
        raise ConfigError(f"cannot bind the serving endpoint to {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else ('[::1]' if host == '::' else url_host)}:{bound_port}"
    store = EndpointStore(cfg, state_dir, say)
    store.restore()
    inference_log = open_inference_log(cfg, say)
    app = create_app(store, token=token, max_body_mb=cfg.serving.max_body_mb, inference_log=inference_log)
    state = {"pid": os.getpid(), "host": host, "port": bound_port, "url": url, "token": token,
             "root": str(cfg.local_root), "started_at": _now_ms()}
    _write_json(state_dir / STATE_FILE, state, private=True)
    say(f"serving on {url} (bound to {host}, pid {os.getpid()}, auth {'on' if token else 'off'}); "
        f"state in {state_dir}")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=10, timeout_keep_alive=30)
    server = _server_class()(config)
    try:
        server.run(sockets=[sock])
    finally:
        if inference_log is not None:
            inference_log.close()  # commits what is left
        current = _read_state(state_dir)
        if current and current.get("pid") == os.getpid():
            (state_dir / STATE_FILE).unlink(missing_ok=True)
        sock.close()
        lock_fh.close()
        say("stopped")
    return 0


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.serving_server --config-json FILE`` (how ``deploy`` starts it)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.serving_server",
                                     description="the local Databricks-compatible serving endpoint server")
    parser.add_argument("--config-json", required=True, help="the full pipeline config as JSON (Config.dump())")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        cfg = Config.model_validate(json.loads(Path(args.config_json).read_text()))
        return serve(cfg, args.host, args.port)
    except ConfigError as exc:
        print(f"p300 serving: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
