"""The local endpoint server as a process: the only owner of its pid, port, token and state files.

Under ``<root>/serving/``:

    server.json          pid, host, port, url, token, started_at of the running server (0600)
    server.lock          flock'ed by the one server of a root
    server-config.json   the configuration a background server was started with (0600: may hold the token)
    server.log           a background server's output
    endpoints.json       endpoint configs (written by the store, restored on start)

Everything that reads or writes those files is here; everything else asks these functions.
Process checks go through ``psutil`` (alive, not a zombie, the command line of a serving
server, started no later than the state file says: a recycled pid is not ours).
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from pipeline.config import Config, ConfigError
from pipeline.report import Reporter

__all__ = [
    "STATE_FILE", "ENDPOINTS_FILE", "LOCK_FILE", "SERVER_CONFIG_FILE", "SERVER_LOG_FILE",
    "ServingError", "ServerInfo", "write_json", "read_state", "write_state", "clear_state", "lock_root",
    "is_loopback", "check_bind", "pid_alive", "recorded_server", "server_info", "start_local_server",
    "stop_pid", "stop_local_server",
]

STATE_FILE = "server.json"
ENDPOINTS_FILE = "endpoints.json"
LOCK_FILE = "server.lock"
SERVER_CONFIG_FILE = "server-config.json"
SERVER_LOG_FILE = "server.log"
SERVER_MODULE = "pipeline.serving"  # `python -m pipeline.serving` runs a server (pipeline/serving/__main__.py)


class ServingError(RuntimeError):
    """The endpoint could not be brought to the wanted state (the message says why)."""


@dataclass(frozen=True)
class ServerInfo:
    """A running local endpoint server, as recorded in ``<root>/serving/server.json``."""

    pid: int
    host: str
    port: int
    url: str
    token: str | None
    started_at: int | None = None
    root: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def write_json(path: Path, data: Any, mode: int = 0o600) -> None:
    """Atomic write (tmp + fsync + rename, then the folder's fsync) with ``mode`` from the start
    (0600: owner only): a kill or a power cut leaves the old file or the new one, never part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_orphans(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _drop_orphans(path: Path) -> None:
    """Remove the temporary files of ``write_json`` calls whose process is gone (killed between
    its open and its rename); a live writer's file is left alone."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not psutil.pid_exists(int(pid)):
            tmp.unlink(missing_ok=True)


def read_state(state_dir: Path) -> ServerInfo | None:
    """The server recorded in ``state_dir`` (None when none is, or the file is unreadable)."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
        return ServerInfo(int(data["pid"]), data["host"], int(data["port"]), data["url"], data.get("token"),
                          data.get("started_at"), data.get("root"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(state_dir: Path, info: ServerInfo) -> None:
    write_json(state_dir / STATE_FILE, asdict(info))


def clear_state(state_dir: Path, pid: int | None = None) -> None:
    """Remove the state file (only when it records ``pid``, if given)."""
    if pid is not None:
        current = read_state(state_dir)
        if current is None or current.pid != pid:
            return
    (state_dir / STATE_FILE).unlink(missing_ok=True)


def lock_root(cfg: Config) -> IO[str]:
    """Take the root's server lock (held while the returned file stays open); ConfigError if
    another server holds it."""
    state_dir = cfg.serving_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    fh = open(state_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        running = read_state(state_dir)
        where = f" (pid {running.pid}, {running.url})" if running else ""
        raise ConfigError(f"a serving endpoint server already runs for root {cfg.root}{where}; "
                          f"stop it with `p300 endpoint stop`") from None
    return fh


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


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not; one that is our child is reaped)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return False


def _is_our_server(info: ServerInfo) -> bool:
    """Guard against a recycled pid: a serving server's command line, started by the time it recorded."""
    try:
        proc = psutil.Process(info.pid)
        cmdline = " ".join(proc.cmdline())
        created_ms = proc.create_time() * 1000
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # not ours to inspect: the state file and the liveness check must do
    started_ok = info.started_at is None or created_ms <= info.started_at + 1000
    return started_ok and (SERVER_MODULE in cmdline or "endpoint" in cmdline)


def _healthy(info: ServerInfo, timeout_s: float = 3.0) -> bool:
    import httpx

    try:
        resp = httpx.get(f"{info.url}/health", headers=info.headers(), timeout=timeout_s)
        return resp.status_code == 200 and resp.json().get("pid") == info.pid
    except (httpx.HTTPError, ValueError):
        return False


def recorded_server(cfg: Config) -> ServerInfo | None:
    """The server recorded for this root whose process is alive (answering or not)."""
    info = read_state(cfg.serving_dir)
    return info if info is not None and pid_alive(info.pid) and _is_our_server(info) else None


def server_info(cfg: Config) -> ServerInfo | None:
    """The local server of this root if it runs and answers its health check, else None."""
    info = read_state(cfg.serving_dir)
    if info is None or not pid_alive(info.pid):
        return None
    return info if _healthy(info) else None


def start_local_server(cfg: Config, rep: Reporter | None = None, host: str | None = None,
                       port: int | None = None, timeout_s: float = 180.0) -> ServerInfo:
    """The running server of this root, or a new one started in the background (its own
    session, so it outlives this process; output in ``<root>/serving/server.log``)."""
    running = server_info(cfg)
    if running is not None:
        return running
    host = host or cfg.serving.host
    port = cfg.serving.port if port is None else port
    check_bind(host, cfg.serving.token)
    state_dir = cfg.serving_dir
    # The child gets this exact configuration (whatever --conf, env and --set made it), with
    # the root made absolute so that its own working directory does not matter.
    dumped = cfg.dump()
    dumped["storage"]["root"] = str(cfg.local_root)
    config_path = state_dir / SERVER_CONFIG_FILE
    write_json(config_path, dumped)  # 0600: may hold the token
    log_path = state_dir / SERVER_LOG_FILE
    if rep:
        rep.info(f"starting the local serving endpoint server in the background (log: {log_path})")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE, "--config-json", str(config_path), "--host", host,
             "--port", str(port)],
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
    if not pid_alive(pid):
        return False
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    except psutil.NoSuchProcess:
        pass
    return True


def stop_local_server(cfg: Config, rep: Reporter | None = None, timeout_s: float = 20.0) -> int | None:
    """Stop this root's server by the pid it recorded; the pid stopped, or None when none ran."""
    from pipeline.serving.inference_commit import drain_inference_log

    info = recorded_server(cfg)
    if info is not None:
        if rep:
            rep.info(f"stopping the local serving endpoint server (pid {info.pid})")
        stop_pid(info.pid, timeout_s)
    clear_state(cfg.serving_dir)
    # whether it stopped cleanly, was killed after timeout_s or had died before: what it
    # answered reaches the inference log before this returns
    drain_inference_log(cfg, rep.info if rep else lambda _msg: None)
    return info.pid if info is not None else None
