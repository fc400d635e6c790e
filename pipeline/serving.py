"""The serving client: one databricks-sdk code path for Databricks and the local server.

``workspace_client(cfg)`` returns a ``WorkspaceClient``: for ``serving.backend:
databricks`` the SDK resolves the workspace and credentials itself (DATABRICKS_HOST /
DATABRICKS_TOKEN, ~/.databrickscfg, or the notebook/job context); for ``local`` it points
at the local endpoint server (pipeline/serving_server.py) on 127.0.0.1, whose pid, port
and token are recorded under ``<root>/serving/``, starting it in the background when
asked to. Everything else here (deploy's reconcile loop, served versions, invocation
URLs and headers) goes through that client and so works unchanged on both backends.

Served entity names are fixed: ``champion`` and ``challenger``. Traffic: champion 100 /
challenger 0 when both are served (evaluation calls each one directly through its
``served-models/{name}/invocations`` URL, so the challenger takes no user traffic until
promoted); 100 to whichever is served alone.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from pipeline.config import Config
from pipeline.report import Reporter
from pipeline.serving_server import STATE_FILE

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.serving import ServingEndpointDetailed

__all__ = [
    "CHAMPION",
    "CHALLENGER",
    "SERVED_NAMES",
    "ServingError",
    "ServerInfo",
    "server_info",
    "recorded_server",
    "start_local_server",
    "stop_local_server",
    "stop_pid",
    "workspace_client",
    "get_endpoint",
    "served_versions",
    "traffic_routes",
    "desired_routes",
    "apply_served_versions",
    "wait_until_not_updating",
    "wait_until_ready",
    "DeployOutcome",
    "invocation_url",
    "auth_headers",
]

# The registry's alias names (pipeline.registry), repeated here so that the server and
# `p300 endpoint` do not import MLflow before they need it.
CHAMPION = "champion"
CHALLENGER = "challenger"
SERVED_NAMES = (CHAMPION, CHALLENGER)
LOCAL_NO_AUTH_TOKEN = "local-no-auth"  # what the SDK sends when the local server has no token (it is not checked)
SERVER_CONFIG_FILE = "server-config.json"
SERVER_LOG_FILE = "server.log"


class ServingError(RuntimeError):
    """The endpoint could not be brought to the wanted state (the message says why)."""


# ---- the local server process ------------------------------------------------------------


@dataclass(frozen=True)
class ServerInfo:
    """A running local endpoint server, as recorded in ``<root>/serving/server.json``."""

    pid: int
    host: str
    port: int
    url: str
    token: str | None
    started_at: int | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child and has exited
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_state(cfg: Config) -> ServerInfo | None:
    try:
        data = json.loads((cfg.serving_dir / STATE_FILE).read_text())
        return ServerInfo(int(data["pid"]), data["host"], int(data["port"]), data["url"], data.get("token"),
                          data.get("started_at"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _healthy(info: ServerInfo, timeout_s: float = 3.0) -> bool:
    import httpx

    try:
        resp = httpx.get(f"{info.url}/health", headers=info.headers(), timeout=timeout_s)
        return resp.status_code == 200 and resp.json().get("pid") == info.pid
    except (httpx.HTTPError, ValueError):
        return False


def recorded_server(cfg: Config) -> ServerInfo | None:
    """The server recorded for this root whose process is alive (answering or not)."""
    info = _read_state(cfg)
    return info if info is not None and _pid_alive(info.pid) and _is_our_server(info.pid) else None


def server_info(cfg: Config) -> ServerInfo | None:
    """The local server of this root if it runs and answers its health check, else None."""
    info = _read_state(cfg)
    if info is None or not _pid_alive(info.pid):
        return None
    return info if _healthy(info) else None


def start_local_server(cfg: Config, rep: Reporter | None = None, host: str | None = None,
                       port: int | None = None, timeout_s: float = 180.0) -> ServerInfo:
    """The running server of this root, or a new one started in the background (its own
    session, so it outlives this process; output in ``<root>/serving/server.log``)."""
    from pipeline.serving_server import check_bind

    running = server_info(cfg)
    if running is not None:
        return running
    host = host or cfg.serving.host
    port = cfg.serving.port if port is None else port
    check_bind(host, cfg.serving.token)
    state_dir = cfg.serving_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    # The child gets this exact configuration (whatever --conf, env and --set made it), with
    # the root made absolute so that its own working directory does not matter.
    dumped = cfg.dump()
    dumped["storage"]["root"] = str(cfg.local_root)
    config_path = state_dir / SERVER_CONFIG_FILE
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold the token
    with os.fdopen(fd, "w") as fh:
        json.dump(dumped, fh, indent=1)
    log_path = state_dir / SERVER_LOG_FILE
    if rep:
        rep.info(f"starting the local serving endpoint server in the background (log: {log_path})")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.serving_server", "--config-json", str(config_path),
             "--host", host, "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = server_info(cfg)
        if info is not None:  # ours, or one that won a concurrent start (the lock allows one per root)
            if rep:
                rep.info(f"local serving endpoint server running on {info.url} (pid {info.pid})")
            return info
        if proc.poll() is not None:
            info = server_info(cfg)
            if info is not None:
                return info
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise ServingError(f"the local serving endpoint server exited with code {proc.returncode}:\n{tail}")
        time.sleep(0.1)
    stop_pid(proc.pid)
    raise ServingError(f"the local serving endpoint server did not answer within {timeout_s:.0f}s (log: {log_path})")


def stop_pid(pid: int, timeout_s: float = 20.0) -> bool:
    """SIGTERM (graceful: requests in flight finish), then SIGKILL after ``timeout_s``."""
    if not _pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    while _pid_alive(pid):
        time.sleep(0.05)
    return True


def _is_our_server(pid: int) -> bool:
    """Guard against a recycled pid: the process must be a serving_server (or ``p300 endpoint serve``)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc (not Linux): the state file and the liveness check must do
    return b"pipeline.serving_server" in cmdline or b"endpoint" in cmdline


def stop_local_server(cfg: Config, rep: Reporter | None = None, timeout_s: float = 20.0) -> int | None:
    """Stop this root's server by the pid it recorded; the pid stopped, or None when none ran."""
    info = recorded_server(cfg)
    if info is None:
        (cfg.serving_dir / STATE_FILE).unlink(missing_ok=True)
        return None
    if rep:
        rep.info(f"stopping the local serving endpoint server (pid {info.pid})")
    stop_pid(info.pid, timeout_s)
    (cfg.serving_dir / STATE_FILE).unlink(missing_ok=True)
    return info.pid


# ---- the SDK client --------------------------------------------------------------------


def workspace_client(cfg: Config, *, start: bool = False, rep: Reporter | None = None) -> "WorkspaceClient":
    """A databricks-sdk client for the configured backend. Local: the root's server (started
    in the background when ``start``; otherwise it must be running)."""
    from databricks.sdk import WorkspaceClient

    from pipeline import __version__ as version

    if cfg.serving.backend == "databricks":
        return WorkspaceClient(product="p300-pipeline", product_version=version)
    info = start_local_server(cfg, rep) if start else server_info(cfg)
    if info is None:
        raise ServingError(f"no local serving endpoint server runs for root {cfg.root}: start one with "
                           f"`p300 endpoint serve` (foreground) or `p300 deploy` (background)")
    from databricks.sdk.config import Config as SdkConfig

    # auth_type pat: the local server only knows bearer tokens, whatever DATABRICKS_* the shell has
    return WorkspaceClient(config=SdkConfig(host=info.url, token=info.token or LOCAL_NO_AUTH_TOKEN, auth_type="pat",
                                            product="p300-pipeline", product_version=version,
                                            retry_timeout_seconds=60))


def get_endpoint(ws: "WorkspaceClient", name: str) -> "ServingEndpointDetailed | None":
    """The endpoint, or None when it does not exist."""
    from databricks.sdk.errors import NotFound

    try:
        return ws.serving_endpoints.get(name)
    except NotFound:
        return None


def _served(config: Any) -> dict[str, tuple[str | None, str | None, str | None, bool | None]]:
    """{served name: (entity name, version, workload size, scale to zero)} of an endpoint config."""
    if config is None:
        return {}
    out = {}
    for e in config.served_entities or []:
        out[e.name] = (e.entity_name, e.entity_version, e.workload_size, e.scale_to_zero_enabled)
    for m in config.served_models or []:  # older endpoints report served_models only
        out.setdefault(m.name, (m.model_name, m.model_version, m.workload_size, m.scale_to_zero_enabled))
    return out


def served_versions(endpoint: "ServingEndpointDetailed | None") -> dict[str, str]:
    """{served entity name: model version} that the endpoint serves now (its active config)."""
    if endpoint is None:
        return {}
    return {name: str(v[1]) for name, v in _served(endpoint.config).items() if v[1] is not None}


def traffic_routes(endpoint: "ServingEndpointDetailed | None") -> dict[str, int]:
    """{served entity name: traffic percentage} of the active config."""
    if endpoint is None or endpoint.config is None or endpoint.config.traffic_config is None:
        return {}
    return {(r.served_entity_name or r.served_model_name): int(r.traffic_percentage or 0)
            for r in endpoint.config.traffic_config.routes or []}


def desired_routes(names: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Champion 100 / challenger 0 when both are served; 100 for a single entity."""
    names = list(names)
    if len(names) == 1:
        return {names[0]: 100}
    if CHAMPION in names:
        return {n: (100 if n == CHAMPION else 0) for n in names}
    share, extra = divmod(100, len(names))
    return {n: share + (1 if i < extra else 0) for i, n in enumerate(names)}


@dataclass
class DeployOutcome:
    """What ``apply_served_versions`` did: action is created, updated or unchanged."""

    action: str
    endpoint: str
    served: dict[str, str]
    routes: dict[str, int]
    config_version: int | None
    waited_s: float = 0.0
    conflicts: int = 0
    notes: list[str] = field(default_factory=list)


def _is_conflict(exc: Exception) -> bool:
    from databricks.sdk.errors import DatabricksError, ResourceConflict

    if isinstance(exc, ResourceConflict):
        return True
    if isinstance(exc, DatabricksError):
        code = (getattr(exc, "error_code", None) or "").upper()
        text = str(exc).lower()
        return code in ("RESOURCE_CONFLICT", "INVALID_STATE") or "currently being updated" in text \
            or "update is in progress" in text
    return False


def _failure_reason(ep: "ServingEndpointDetailed") -> str:
    pending = ep.pending_config
    messages = []
    for e in (pending.served_entities or []) if pending else []:
        if e.state and e.state.deployment_state_message:
            messages.append(f"{e.name}: {e.state.deployment_state_message}")
    return "; ".join(messages) or "no reason reported"


def wait_until_not_updating(ws: "WorkspaceClient", name: str, timeout_s: float,
                            rep: Reporter | None = None) -> "ServingEndpointDetailed":
    """Poll until the endpoint's config update is no longer IN_PROGRESS (finished, failed or
    cancelled: the caller decides what that means); polls back off from 0.2 s to 10 s."""
    from databricks.sdk.service.serving import EndpointStateConfigUpdate

    start = time.monotonic()
    deadline = start + timeout_s
    delay, last_note = 0.2, start
    while True:
        ep = ws.serving_endpoints.get(name)
        state = ep.state.config_update if ep.state else None
        if state != EndpointStateConfigUpdate.IN_PROGRESS:
            return ep
        now = time.monotonic()
        if now >= deadline:
            raise ServingError(f"endpoint {name}: config update still in progress after {timeout_s:.0f}s "
                               f"(serving.ready_timeout_s)")
        if rep and now - last_note >= 30:
            rep.info(f"endpoint {name}: config update in progress ({now - start:.0f}s)")
            last_note = now
        time.sleep(min(delay, max(deadline - now, 0.05)))
        delay = min(delay * 1.5, 10.0)


def wait_until_ready(ws: "WorkspaceClient", cfg: Config, timeout_s: float | None = None,
                     rep: Reporter | None = None) -> "ServingEndpointDetailed":
    """The configured endpoint once it can be queried (no update in progress, state READY),
    e.g. after a local server restarted and is reloading its models; ServingError if it
    does not exist or does not get there."""
    from databricks.sdk.service.serving import EndpointStateReady

    name = cfg.serving.endpoint_name
    timeout_s = cfg.serving.ready_timeout_s if timeout_s is None else timeout_s
    if get_endpoint(ws, name) is None:
        raise ServingError(f"endpoint {name} does not exist: run `p300 deploy` first")
    ep = wait_until_not_updating(ws, name, timeout_s, rep)
    if not ep.state or ep.state.ready != EndpointStateReady.READY:
        raise ServingError(f"endpoint {name} is not ready ({ep.state.ready.value if ep.state and ep.state.ready else '?'}"
                           f", config update {ep.state.config_update.value if ep.state and ep.state.config_update else '?'}"
                           f"): {_failure_reason(ep)}")
    return ep


def _entity_inputs(cfg: Config, versions: Mapping[str, str]) -> list[Any]:
    from databricks.sdk.service.serving import ServedEntityInput

    return [ServedEntityInput(name=name, entity_name=cfg.registry.model_name, entity_version=str(version),
                              workload_size=cfg.serving.workload_size,
                              scale_to_zero_enabled=cfg.serving.scale_to_zero)
            for name, version in versions.items()]


def _traffic(routes: Mapping[str, int]) -> Any:
    from databricks.sdk.service.serving import Route, TrafficConfig

    return TrafficConfig(routes=[Route(served_model_name=n, traffic_percentage=int(p)) for n, p in routes.items()])


def _matches(ep: "ServingEndpointDetailed", cfg: Config, versions: Mapping[str, str],
             routes: Mapping[str, int]) -> bool:
    want = {n: (cfg.registry.model_name, str(v), cfg.serving.workload_size, cfg.serving.scale_to_zero)
            for n, v in versions.items()}
    have = {n: (e[0], str(e[1]), e[2], e[3]) for n, e in _served(ep.config).items()}
    return have == want and traffic_routes(ep) == dict(routes)


def apply_served_versions(ws: "WorkspaceClient", cfg: Config, versions: Mapping[str, str],
                          rep: Reporter | None = None, routes: Mapping[str, int] | None = None,
                          timeout_s: float | None = None, max_attempts: int = 5) -> DeployOutcome:
    """Make the configured endpoint serve exactly ``versions`` ({served name: model version} of
    ``registry.model_name``) with ``routes`` (default ``desired_routes``): create it when
    missing, update its config when it differs, nothing when it already matches. Waits for
    the update; an update already in progress (someone else's) is waited on, then the state
    is read again and the change retried. Deploy and promote both call this."""
    from databricks.sdk.errors import DatabricksError

    from databricks.sdk.service.serving import EndpointCoreConfigInput, EndpointStateConfigUpdate

    if not versions:
        raise ServingError("nothing to serve: no model versions given")
    unknown = set(versions) - set(SERVED_NAMES)
    if unknown:
        raise ServingError(f"served entity names are {SERVED_NAMES}, got {sorted(unknown)}")
    versions = {n: str(versions[n]) for n in SERVED_NAMES if n in versions}  # stable order
    routes = dict(routes) if routes is not None else desired_routes(list(versions))
    name = cfg.serving.endpoint_name
    timeout_s = cfg.serving.ready_timeout_s if timeout_s is None else timeout_s
    say = rep.info if rep else (lambda msg: None)
    started = time.monotonic()
    outcome = DeployOutcome("unchanged", name, versions, routes, None)
    action = None
    for attempt in range(1, max_attempts + 1):
        ep = get_endpoint(ws, name)
        if ep is None:
            say(f"endpoint {name} does not exist: creating it with {_describe(versions, routes)}")
            try:
                ws.serving_endpoints.create(name=name, config=EndpointCoreConfigInput(
                    name=name, served_entities=_entity_inputs(cfg, versions), traffic_config=_traffic(routes)))
                action = "created"
            except DatabricksError as exc:
                if not _is_conflict(exc):
                    raise
                outcome.conflicts += 1
                say(f"endpoint {name} appeared meanwhile ({exc}); reading it again")
                continue
        elif ep.state and ep.state.config_update == EndpointStateConfigUpdate.IN_PROGRESS:
            say(f"endpoint {name} has a config update in progress; waiting for it to finish before deploying")
            outcome.conflicts += 1
            wait_until_not_updating(ws, name, max(timeout_s - (time.monotonic() - started), 1.0), rep)
            continue
        elif _matches(ep, cfg, versions, routes):
            if action is None:
                outcome.notes.append(f"endpoint {name} already serves {_describe(versions, routes)}: nothing to do")
                say(outcome.notes[-1])
            outcome.action = action or "unchanged"
            outcome.config_version = ep.config.config_version if ep.config else None
            break
        else:
            say(f"endpoint {name} serves {_describe(served_versions(ep), traffic_routes(ep))}: "
                f"updating it to {_describe(versions, routes)}")
            try:
                ws.serving_endpoints.update_config(name=name, served_entities=_entity_inputs(cfg, versions),
                                                   traffic_config=_traffic(routes))
                action = action or "updated"
            except DatabricksError as exc:
                if not _is_conflict(exc):
                    raise
                outcome.conflicts += 1
                say(f"endpoint {name}: another config update is in progress ({exc}); waiting, then retrying")
                wait_until_not_updating(ws, name, max(timeout_s - (time.monotonic() - started), 1.0), rep)
                continue
        say(f"endpoint {name}: waiting for the new config to load (at most {timeout_s:.0f}s)")
        ep = wait_until_not_updating(ws, name, max(timeout_s - (time.monotonic() - started), 1.0), rep)
        if ep.state and ep.state.config_update != EndpointStateConfigUpdate.NOT_UPDATING:
            raise ServingError(f"endpoint {name}: config update ended {ep.state.config_update.value}: "
                               f"{_failure_reason(ep)}")
        # read again at the top: confirms the endpoint now serves what we asked (or someone else won)
    else:
        raise ServingError(f"endpoint {name}: could not reach {_describe(versions, routes)} in {max_attempts} "
                           f"attempts (concurrent updates?)")
    outcome.waited_s = time.monotonic() - started
    return outcome


def _describe(versions: Mapping[str, str], routes: Mapping[str, int]) -> str:
    if not versions:
        return "nothing"
    return ", ".join(f"{n} v{v} ({routes.get(n, 0)}%)" for n, v in versions.items())


# ---- invocation ------------------------------------------------------------------------


def invocation_url(ws: "WorkspaceClient", cfg: Config, served: str | None = None) -> str:
    """The endpoint's invocation URL; ``served`` names one served entity (direct, no routing)."""
    base = f"{ws.config.host.rstrip('/')}/serving-endpoints/{cfg.serving.endpoint_name}"
    return f"{base}/served-models/{served}/invocations" if served else f"{base}/invocations"


def auth_headers(ws: "WorkspaceClient") -> dict[str, str]:
    """The headers that authenticate a raw HTTP call the way the SDK's own calls do."""
    return dict(ws.config.authenticate())
