"""`p300 endpoint serve|status|stop`: the local serving endpoint server.

serve   runs it in the foreground on serving.host:serving.port (--host/--port override;
        a port of 0 picks a free one) until Ctrl-C; `p300 deploy` starts one in the
        background instead when none runs.
status  whether this root's server runs (pid, URL, auth), and each endpoint with its
        state, served versions and traffic; with serving.backend databricks, the
        workspace endpoint named serving.endpoint_name.
stop    stops this root's server by the pid it recorded (graceful, then forced).
"""
from __future__ import annotations

import argparse

from pipeline.config import Config
from pipeline.report import Reporter

__all__ = ["main", "endpoint_rows"]


def endpoint_rows(endpoints: list) -> list[tuple]:
    """(name, ready, config update, served entities, traffic) per endpoint, for a table."""
    from pipeline.serving.client import served_versions, traffic_routes

    rows = []
    for ep in endpoints:
        served = served_versions(ep)
        routes = traffic_routes(ep)
        rows.append((ep.name, ep.state.ready.value if ep.state and ep.state.ready else "",
                     ep.state.config_update.value if ep.state and ep.state.config_update else "",
                     ", ".join(f"{n}=v{v}" for n, v in served.items()) or "-",
                     ", ".join(f"{n} {p}%" for n, p in routes.items()) or "-"))
    return rows


HEADERS = ["endpoint", "ready", "config update", "served", "traffic"]


def main(cfg: Config, args: argparse.Namespace, rep: Reporter) -> int:
    from pipeline.serving import client, process

    action = args.action
    if cfg.serving.backend != "local" and action in ("serve", "stop"):
        rep.warn(f"`p300 endpoint {action}` runs the local server; serving.backend is {cfg.serving.backend!r}")
        return 2
    if action == "serve":
        from pipeline.serving.server import serve

        running = process.server_info(cfg)
        if running is not None:
            rep.warn(f"a serving endpoint server already runs for this root: pid {running.pid} on {running.url} "
                     f"(stop it with `p300 endpoint stop`)")
            return 1
        return serve(cfg, host=args.host, port=args.port, log=rep.info)
    if action == "stop":
        pid = process.stop_local_server(cfg, rep)
        rep.result(f"stopped the serving endpoint server (pid {pid})" if pid else
                   "no serving endpoint server runs for this root")
        return 0
    # status
    if cfg.serving.backend == "databricks":
        ws = client.workspace_client(cfg)
        ep = client.get_endpoint(ws, cfg.serving.endpoint_name)
        rep.result(f"workspace {ws.config.host}")
        if ep is None:
            rep.result(f"endpoint {cfg.serving.endpoint_name} does not exist (run `p300 deploy`)")
        else:
            rep.table(endpoint_rows([ep]), HEADERS)
        return 0
    info = process.server_info(cfg)
    if info is None:
        recorded = process.recorded_server(cfg)
        if recorded is not None:
            rep.result(f"not answering: pid {recorded.pid} is alive but {recorded.url}/health does not answer "
                       f"(`p300 endpoint stop` stops it)")
            return 1
        rep.result(f"not running (root {cfg.root})")
        return 0
    rep.result(f"running: pid {info.pid}, {info.url}, bound to {info.host}, auth {'on' if info.token else 'off'}")
    ws = client.workspace_client(cfg)
    endpoints = list(ws.serving_endpoints.list())
    if endpoints:
        rep.table(endpoint_rows([ws.serving_endpoints.get(e.name) for e in endpoints]), HEADERS)
    else:
        rep.result("no endpoints (run `p300 deploy`)")
    return 0
