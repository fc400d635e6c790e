"""The serving client: one databricks-sdk code path for Databricks and the local server.

``workspace_client(cfg)`` returns a ``WorkspaceClient``: for ``serving.backend:
databricks`` the SDK resolves the workspace and credentials itself (DATABRICKS_HOST /
DATABRICKS_TOKEN, ~/.databrickscfg, or the notebook/job context); for ``local`` it points
at this root's local endpoint server (``pipeline.serving.process``), started in the
background when asked to. Everything else here (deploy's reconcile loop, served versions,
invocation URLs and headers) goes through that client, and waits through the SDK's own
waiter, so it works unchanged on both backends.

Served entity names are the registry's aliases, ``champion`` and ``challenger``; traffic
comes from ``pipeline.serving.routes.desired_routes``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Mapping

from pipeline.config import Config
from pipeline.registry_names import CHALLENGER, CHAMPION
from pipeline.report import Reporter
from pipeline.serving.process import ServingError, server_info, start_local_server
from pipeline.serving.routes import desired_routes

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.serving import ServingEndpointDetailed

__all__ = ["workspace_client", "get_endpoint", "served_versions", "traffic_routes", "normalised_config",
           "wait_until_not_updating", "wait_until_ready", "DeployOutcome", "apply_served_versions",
           "invocation_url", "auth_headers", "LOCAL_NO_AUTH_TOKEN"]

LOCAL_NO_AUTH_TOKEN = "local-no-auth"  # what the SDK sends when the local server has no token (it is not checked)


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


def normalised_config(endpoint: "ServingEndpointDetailed | None") -> tuple[frozenset, frozenset]:
    """What deploy compares: the served entities by (name, model, version, size) and the routes
    that take traffic. A service may omit 0% routes, echo ``served_models`` only, or leave out
    the size; none of that is a difference (a size it leaves out matches any)."""
    if endpoint is None:
        return frozenset(), frozenset()
    entities = frozenset((n, e[0], str(e[1]), e[2]) for n, e in _served(endpoint.config).items())
    return entities, frozenset((n, p) for n, p in traffic_routes(endpoint).items() if p > 0)


def _matches(ep: "ServingEndpointDetailed", cfg: Config, versions: Mapping[str, str],
             routes: Mapping[str, int]) -> bool:
    have_entities, have_routes = normalised_config(ep)
    size = cfg.serving.workload_size
    want = {(n, cfg.registry.model_name, str(v), size) for n, v in versions.items()}
    have = {(n, m, v, s if s is not None else size) for n, m, v, s in have_entities}
    scale = {n: e[3] for n, e in _served(ep.config).items() if e[3] is not None}
    return (have == want and have_routes == {(n, int(p)) for n, p in routes.items() if p > 0}
            and all(s == cfg.serving.scale_to_zero for s in scale.values()))


def _failure_reason(ep: "ServingEndpointDetailed") -> str:
    pending = ep.pending_config
    messages = []
    for e in (pending.served_entities or []) if pending else []:
        if e.state and e.state.deployment_state_message:
            messages.append(f"{e.name}: {e.state.deployment_state_message}")
    return "; ".join(messages) or "no reason reported"


_QUICK_POLLS_S = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)  # looks before the SDK's waiter (3 s in all)


def wait_until_not_updating(ws: "WorkspaceClient", name: str, timeout_s: float,
                            rep: Reporter | None = None) -> "ServingEndpointDetailed":
    """The endpoint once no config update is in progress (finished, failed or cancelled: the
    caller decides what that means), through the SDK's own waiter; ServingError on timeout."""
    from databricks.sdk.errors import OperationFailed

    start, last_note = time.monotonic(), [time.monotonic()]

    def note(ep: "ServingEndpointDetailed") -> None:
        now = time.monotonic()
        if rep and now - last_note[0] >= 30:
            rep.info(f"endpoint {name}: config update in progress ({now - start:.0f}s)")
            last_note[0] = now

    from databricks.sdk.service.serving import EndpointStateConfigUpdate as Update

    # a few quick looks first: the SDK's waiter sleeps 1-2 s before its second look (sized for
    # Databricks' builds of minutes), and a local endpoint loads a model in well under a second
    for pause in _QUICK_POLLS_S:
        time.sleep(pause)
        ep = ws.serving_endpoints.get(name)
        if ep.state is None or ep.state.config_update in (Update.NOT_UPDATING, Update.UPDATE_FAILED,
                                                          Update.UPDATE_CANCELED):
            return ep
        note(ep)
    try:
        return ws.serving_endpoints.wait_get_serving_endpoint_not_updating(
            name, timeout=timedelta(seconds=max(0.0, timeout_s - (time.monotonic() - start))), callback=note)
    except OperationFailed:
        return ws.serving_endpoints.get(name)  # UPDATE_FAILED / UPDATE_CANCELED: the caller reads why
    except TimeoutError:
        raise ServingError(f"endpoint {name}: config update still in progress after {timeout_s:.0f}s") from None


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


def _entity_inputs(cfg: Config, versions: Mapping[str, str]) -> list[Any]:
    from databricks.sdk.service.serving import ServedEntityInput

    return [ServedEntityInput(name=name, entity_name=cfg.registry.model_name, entity_version=str(version),
                              workload_size=cfg.serving.workload_size,
                              scale_to_zero_enabled=cfg.serving.scale_to_zero)
            for name, version in versions.items()]


def _traffic(routes: Mapping[str, int]) -> Any:
    from databricks.sdk.service.serving import Route, TrafficConfig

    return TrafficConfig(routes=[Route(served_model_name=n, traffic_percentage=int(p)) for n, p in routes.items()])


def _describe(versions: Mapping[str, str], routes: Mapping[str, int]) -> str:
    if not versions:
        return "nothing"
    return ", ".join(f"{n} v{v} ({routes.get(n, 0)}%)" for n, v in versions.items())


def apply_served_versions(ws: "WorkspaceClient", cfg: Config, versions: Mapping[str, str],
                          rep: Reporter | None = None, routes: Mapping[str, int] | None = None,
                          timeout_s: float | None = None, max_attempts: int = 5) -> DeployOutcome:
    """Make the configured endpoint serve exactly ``versions`` ({served name: model version} of
    ``registry.model_name``) with ``routes`` (default ``desired_routes``): create it when
    missing, update its config when it differs (compared normalised: ``normalised_config``),
    nothing when it already matches. Waits for the update: ``serving.first_build_timeout_s``
    for a new endpoint's first build, ``serving.ready_timeout_s`` for an update. An update
    already in progress (someone else's) is waited on, then the state is read again and the
    change retried. Deploy and promote both call this."""
    from databricks.sdk.errors import DatabricksError
    from databricks.sdk.service.serving import EndpointCoreConfigInput, EndpointStateConfigUpdate

    if not versions:
        raise ServingError("nothing to serve: no model versions given")
    served_names = (CHAMPION, CHALLENGER)
    unknown = set(versions) - set(served_names)
    if unknown:
        raise ServingError(f"served entity names are {served_names}, got {sorted(unknown)}")
    versions = {n: str(versions[n]) for n in served_names if n in versions}  # stable order
    routes = dict(routes) if routes is not None else desired_routes(list(versions))
    name = cfg.serving.endpoint_name
    timeout_s = cfg.serving.ready_timeout_s if timeout_s is None else timeout_s
    say = rep.info if rep else (lambda msg: None)
    started = time.monotonic()
    outcome = DeployOutcome("unchanged", name, versions, routes, None)
    action = None

    def left(limit: float) -> float:
        return max(limit - (time.monotonic() - started), 1.0)

    for _ in range(max_attempts):
        ep = get_endpoint(ws, name)
        limit = timeout_s
        if ep is None:
            say(f"endpoint {name} does not exist: creating it with {_describe(versions, routes)}")
            try:
                ws.serving_endpoints.create(name=name, config=EndpointCoreConfigInput(
                    name=name, served_entities=_entity_inputs(cfg, versions), traffic_config=_traffic(routes)))
                action, limit = "created", max(timeout_s, cfg.serving.first_build_timeout_s)
            except DatabricksError as exc:
                if not _is_conflict(exc):
                    raise
                outcome.conflicts += 1
                say(f"endpoint {name} appeared meanwhile ({exc}); reading it again")
                continue
        elif ep.state and ep.state.config_update == EndpointStateConfigUpdate.IN_PROGRESS:
            say(f"endpoint {name} has a config update in progress; waiting for it to finish before deploying")
            outcome.conflicts += 1
            wait_until_not_updating(ws, name, left(max(timeout_s, cfg.serving.first_build_timeout_s)), rep)
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
                wait_until_not_updating(ws, name, left(timeout_s), rep)
                continue
        say(f"endpoint {name}: waiting for the new config to load (at most {left(limit):.0f}s)")
        ep = wait_until_not_updating(ws, name, left(limit), rep)
        if ep.state and ep.state.config_update != EndpointStateConfigUpdate.NOT_UPDATING:
            raise ServingError(f"endpoint {name}: config update ended {ep.state.config_update.value}: "
                               f"{_failure_reason(ep)}")
        # read again at the top: confirms the endpoint now serves what we asked (or someone else won)
    else:
        raise ServingError(f"endpoint {name}: could not reach {_describe(versions, routes)} in {max_attempts} "
                           f"attempts (concurrent updates?)")
    outcome.waited_s = time.monotonic() - started
    return outcome


def invocation_url(ws: "WorkspaceClient", cfg: Config, served: str | None = None) -> str:
    """The endpoint's invocation URL; ``served`` names one served entity (direct, no routing)."""
    base = f"{ws.config.host.rstrip('/')}/serving-endpoints/{cfg.serving.endpoint_name}"
    return f"{base}/served-models/{served}/invocations" if served else f"{base}/invocations"


def auth_headers(ws: "WorkspaceClient") -> dict[str, str]:
    """The headers that authenticate a raw HTTP call the way the SDK's own calls do."""
    return dict(ws.config.authenticate())
