"""Endpoint configs and state: what each endpoint serves, its pending update, persistence.

``EndpointStore`` holds every endpoint of one server. A create or update validates the
config (``spec.ConfigSpec``), refuses unknown model versions at once (404), then loads
the new config's models on a background thread and swaps it in when all are ready
(``models.ActiveConfig``); until then the endpoint reports ``config_update: IN_PROGRESS``
and keeps serving its old config. Configs persist in ``<root>/serving/endpoints.json``
and load again when a server restarts.
"""
from __future__ import annotations

import json
import math
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.config import Config
from pipeline.serving.errors import ApiError, bad_parameter
from pipeline.serving.models import ActiveConfig, LoadedModel, load_model
from pipeline.serving.process import ENDPOINTS_FILE, write_json
from pipeline.serving.spec import NAME_RE, ConfigSpec

__all__ = ["EndpointStore", "Endpoint", "ColdStarts", "NOT_UPDATING", "IN_PROGRESS", "UPDATE_FAILED"]

NOT_UPDATING, IN_PROGRESS, UPDATE_FAILED = "NOT_UPDATING", "IN_PROGRESS", "UPDATE_FAILED"


def now_ms() -> int:
    return int(time.time() * 1000)


class ColdStarts:
    """A simulated scale-to-zero: a served entity that got no invocation for ``idle_s`` answers
    503 with ``Retry-After`` for the next ``warmup_s`` seconds, as a Databricks endpoint does
    while it scales up from zero. ``idle_s`` None: never (the default)."""

    def __init__(self, idle_s: float | None, warmup_s: float) -> None:
        self.idle_s, self.warmup_s = idle_s, warmup_s
        self._lock = threading.Lock()
        self._since = time.monotonic()
        self._last: dict[str, float] = {}
        self._warm_at: dict[str, float] = {}

    def wait_s(self, served: str) -> float | None:
        """Seconds until ``served`` is warm again, or None when it serves now."""
        if self.idle_s is None:
            return None
        now = time.monotonic()
        with self._lock:
            warm_at = self._warm_at.get(served, 0.0)
            if now < warm_at:
                return warm_at - now
            if now - self._last.get(served, self._since) >= self.idle_s:  # scaled to zero: wake it up
                self._warm_at[served] = self._last[served] = now + self.warmup_s
                return self.warmup_s
            self._last[served] = now
            return None

    def reset(self) -> None:
        """A config just loaded is warm."""
        with self._lock:
            self._since = time.monotonic()
            self._last.clear()
            self._warm_at.clear()


def retry_after(seconds: float) -> dict[str, str]:
    """The Retry-After header (whole seconds, at least 1) for a wait of ``seconds``."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


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
    cold: ColdStarts = field(default_factory=lambda: ColdStarts(None, 0.0))

    @property
    def update_state(self) -> str:
        if self.pending is None:
            return NOT_UPDATING
        return UPDATE_FAILED if self.pending.failed else IN_PROGRESS

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
            out["config"] = self.active.spec.describe(
                self.active.version, {n: ("DEPLOYMENT_READY", f"Served model version {m.version} is ready.")
                                      for n, m in self.active.models.items()}, self.active.ready_at)
        if self.pending is not None:
            p = self.pending
            state = ("DEPLOYMENT_FAILED", p.failed) if p.failed else ("DEPLOYMENT_CREATING", "Loading the model version.")
            pending = p.spec.describe(p.version, {e.name: state for e in p.spec.entities},
                                      {e.name: p.start_time for e in p.spec.entities})
            pending["start_time"] = p.start_time
            out["pending_config"] = pending
        return out


class EndpointStore:
    """All endpoints of one server, their model cache, loader threads and persistence."""

    def __init__(self, cfg: Config, state_dir: Path, log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.endpoints: dict[str, Endpoint] = {}
        self._lock = threading.RLock()
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self.log = log or (lambda msg: print(f"[p300-serving] {msg}", file=sys.stderr, flush=True))
        self._registry: Any = None
        self._client_lock = threading.Lock()

    # -- registry ----------------------------------------------------------------------
    def _client(self) -> Any:
        """The root's MLflow client, opened once (it also points MLflow's ``models:/`` URIs at
        this root's registry, which the loader threads resolve)."""
        with self._client_lock:
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
    def _new_endpoint(self, name: str, **fields: Any) -> Endpoint:
        serving = self.cfg.serving
        return Endpoint(name=name, cold=ColdStarts(serving.simulate_cold_start_after_idle_s,
                                                   serving.simulate_cold_start_s), **fields)

    def create(self, name: Any, spec_body: Any) -> dict[str, Any]:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise bad_parameter(f"name {name!r}: an endpoint name has 1-63 letters, digits, '-' or '_'")
        spec = ConfigSpec.from_request(spec_body)
        self.check_versions(spec)
        with self._lock:
            if name in self.endpoints:
                raise ApiError(409, "RESOURCE_ALREADY_EXISTS", f"Endpoint with name '{name}' already exists.")
            now = now_ms()
            ep = self._new_endpoint(name, id=uuid.uuid4().hex, creation_timestamp=now, last_updated_timestamp=now)
            self.endpoints[name] = ep
            self._start_update(ep, spec)
            self._persist()
            return ep.describe()

    def update(self, name: str, spec_body: Any) -> dict[str, Any]:
        spec = ConfigSpec.from_request(spec_body, where="body")
        self.check_versions(spec)
        with self._lock:
            ep = self.get(name)
            if ep.update_state == IN_PROGRESS:
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
        ep.pending = Pending(spec, ep.config_version, now_ms())
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
            self._client()  # a restored config loads before any request opened the registry
            t0 = time.perf_counter()
            model = load_model(entity_name, version)
            self.log(f"loaded {entity_name} version {version} in {time.perf_counter() - t0:.1f}s "
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
            self.log(f"endpoint {ep.name}: config version {pending.version} failed to load: {reason}")
            with self._lock:
                if ep.pending is pending:
                    pending.failed = f"Failed to load the model version: {reason}"
            return
        with self._lock:
            if self.endpoints.get(ep.name) is not ep or ep.pending is not pending:
                return  # deleted (or superseded) while loading
            now = now_ms()
            previous = ep.active.ready_at if ep.active else {}
            old_models = ep.active.models if ep.active else {}
            ready_at = {n: previous[n] if n in old_models and old_models[n] is models[n] else now for n in models}
            ep.active = ActiveConfig.build(pending.spec, pending.version, models, ready_at)  # the swap
            ep.pending = None
            ep.last_updated_timestamp = now
            ep.cold.reset()
            self._persist()
            self._evict()
        served = ", ".join(f"{e.name}={e.entity_name}/{e.entity_version}" for e in pending.spec.entities)
        self.log(f"endpoint {ep.name}: config version {pending.version} serving {served}")

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
        write_json(self.endpoints_file, {"endpoints": records}, mode=0o644)

    def restore(self) -> int:
        """Recreate persisted endpoints; their models load in the background (NOT_READY until then)."""
        if not self.endpoints_file.exists():
            return 0
        try:
            records = json.loads(self.endpoints_file.read_text())["endpoints"]
        except (ValueError, KeyError, TypeError) as exc:
            self.log(f"ignoring unreadable {self.endpoints_file}: {exc}")
            return 0
        with self._lock:
            for rec in records:
                ep = self._new_endpoint(rec["name"], id=rec.get("id") or uuid.uuid4().hex,
                                        creation_timestamp=rec.get("creation_timestamp") or now_ms(),
                                        last_updated_timestamp=rec.get("last_updated_timestamp") or now_ms(),
                                        config_version=max(int(rec.get("config_version") or 1), 1) - 1)
                self.endpoints[ep.name] = ep
                if rec.get("config"):
                    try:
                        self._start_update(ep, ConfigSpec.from_request(rec["config"]))
                    except ApiError as exc:
                        self.log(f"endpoint {ep.name}: persisted config is invalid: {exc.message}")
        self.log(f"restored {len(records)} endpoint(s) from {self.endpoints_file}")
        return len(records)
