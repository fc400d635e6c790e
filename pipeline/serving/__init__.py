"""Model serving: the Databricks serving-endpoints API, on a workspace or a local server.

    client     the databricks-sdk code path (deploy, promote, evaluate, ``p300 endpoint``)
    process    the local server process: its pid, port, token and state files
    server     runs the local server (``python -m pipeline.serving``, ``p300 endpoint serve``)
    app        its HTTP routes and bearer auth
    store      its endpoints: state, updates, persistence;   spec: their validated configs
    models     loaded model versions, scoring one request, the hot swap
    scoring    the one input validator (the logged pyfunc model uses it too)
    routes     traffic splits;   errors: the server's error type
    inference_log   the request log: write-ahead file on the request path, Delta behind it

The client-side names below are importable from ``pipeline.serving`` itself. They load on
first use (PEP 562) so that importing ``pipeline.serving.scoring`` (inside every logged
model) pulls in nothing else.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "pipeline.serving.client": ("workspace_client", "get_endpoint", "served_versions", "traffic_routes",
                                "normalised_config", "wait_until_not_updating", "wait_until_ready",
                                "DeployOutcome", "apply_served_versions", "invocation_url", "auth_headers"),
    "pipeline.serving.process": ("ServingError", "ServerInfo", "server_info", "recorded_server",
                                 "start_local_server", "stop_local_server", "stop_pid"),
    "pipeline.serving.routes": ("desired_routes",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
