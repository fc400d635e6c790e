"""Running the local endpoint server: bind, lock the root, record the process, serve until a signal.

``python -m pipeline.serving --config-json FILE`` (how ``deploy`` starts one in the
background) and ``p300 endpoint serve`` (the foreground) both end up in :func:`serve`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

from pipeline.config import Config, ConfigError
from pipeline.serving import process
from pipeline.serving.app import create_app
from pipeline.serving.store import EndpointStore

__all__ = ["serve", "main"]


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


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on TCP-proto sockets, and without it
    # Nagle + delayed ACKs add ~40 ms to a response written in two parts
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind the serving endpoint to {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    return sock


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):
        return f"http://127.0.0.1:{port}"
    if host == "::":
        return f"http://[::1]:{port}"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _import_mlflow() -> None:
    try:
        import mlflow.pyfunc  # noqa: F401
    except Exception:  # noqa: BLE001 - the first model load imports it again and reports why
        pass


def serve(cfg: Config, host: str | None = None, port: int | None = None,
          log: Callable[[str], None] | None = None, on_invocation: Callable[[Any], None] | None = None) -> int:
    """Run the server in the foreground until SIGINT/SIGTERM; 0 on a clean stop."""
    import uvicorn

    host = host or cfg.serving.host
    port = cfg.serving.port if port is None else port
    token = cfg.serving.token
    process.check_bind(host, token)
    say = log or (lambda msg: print(f"[p300-serving] {msg}", file=sys.stderr, flush=True))
    state_dir = cfg.serving_dir
    lock = process.lock_root(cfg)
    try:
        sock = _bind(host, port)
    except ConfigError:
        lock.close()
        raise
    info = process.ServerInfo(pid=os.getpid(), host=host, port=sock.getsockname()[1],
                              url=_url(host, sock.getsockname()[1]), token=token,
                              started_at=int(time.time() * 1000), root=str(cfg.local_root))
    store = EndpointStore(cfg, state_dir, say)
    if not store.restore():  # restored endpoints load their models (and MLflow) right away anyway
        # MLflow's import is most of a first model load (about 1 s): done while nothing waits on it
        threading.Thread(target=_import_mlflow, name="warm-imports", daemon=True).start()
    inference_log = None
    if on_invocation is None:  # the inference log (monitoring.inference_log; docs/monitoring.md)
        from pipeline.serving.inference_log import open_inference_log, record_invocation

        inference_log = open_inference_log(cfg, say)
        if inference_log is not None:
            on_invocation = partial(record_invocation, inference_log)
    app = create_app(store, token=token, max_body_mb=cfg.serving.max_body_mb, on_invocation=on_invocation)
    process.write_state(state_dir, info)
    say(f"serving on {info.url} (bound to {host}, pid {info.pid}, auth {'on' if token else 'off'}); "
        f"state in {state_dir}")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=10, timeout_keep_alive=30)
    try:
        _server_class()(config).run(sockets=[sock])
    finally:
        if inference_log is not None:
            inference_log.close()  # commits what is left
        process.clear_state(state_dir, pid=info.pid)
        sock.close()
        lock.close()
        say("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.serving --config-json FILE``."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.serving",
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
