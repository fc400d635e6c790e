"""`p300 connect serve|status|stop`: a local Spark Connect server with Delta, for trying and
testing the pipeline the way serverless jobs and shared clusters run it.

The server is Spark's own ``org.apache.spark.sql.connect.service.SparkConnectServer`` (its
jar ships in the pyspark wheel), started through ``spark-submit`` with the Delta jars and
Delta's SQL extension and catalog, bound to loopback on a free port. ``serve`` waits until
it accepts connections, records its pid, port and URL in ``<root>/_connect/server.json``
and prints the URL to put in ``spark.remote``; ``stop`` ends that pid. The equivalent by
hand (what ``serve`` runs, with the jars of ``./dev setup``):

    spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer \\
      --jars delta-spark_4.2_2.13-4.4.0.jar,delta-storage-4.4.0.jar \\
      --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \\
      --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \\
      --conf spark.connect.grpc.binding.address=127.0.0.1 --conf spark.connect.grpc.binding.port=15002 \\
      spark-internal
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from pipeline import files
from pipeline.config import Config, ConfigError
from pipeline.report import Reporter
from pipeline.submit import submit_command

__all__ = ["ServerInfo", "serve", "stop", "running", "main", "SERVER_CLASS"]

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    url: str
    log: str


def _state_dir(cfg: Config) -> Path:
    return files.local_path(cfg.path("_connect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def running(cfg: Config) -> ServerInfo | None:
    """This root's server when its recorded pid is alive, else None."""
    state = _state_dir(cfg) / "server.json"
    if not state.is_file():
        return None
    info = ServerInfo(**json.loads(state.read_text()))
    return info if psutil.pid_exists(info.pid) else None


def server_command(cfg: Config, port: int, master: str) -> list[str]:
    """spark-submit's argv for the server: the pipeline's local Spark settings, Delta's jars."""
    conf = {"spark.connect.grpc.binding.address": "127.0.0.1", "spark.connect.grpc.binding.port": str(port)}
    cmd = submit_command(cfg, [], master, spark_conf=conf, app="spark-internal",
                         app_name=f"{cfg.spark.app_name}: Spark Connect server")
    return [cmd[0], "--class", SERVER_CLASS, *cmd[1:]]


def serve(cfg: Config, port: int = 0, master: str | None = None, timeout_s: float = 180.0,
          rep: Reporter | None = None) -> ServerInfo:
    """Start the server (or return the one already running for this root) and wait until it listens."""
    rep = rep or Reporter(quiet=True)
    current = running(cfg)
    if current is not None:
        rep.info(f"already running: {current.url} (pid {current.pid})")
        return current
    port = port or _free_port()
    master = master or cfg.spark.master or "local[*]"
    state = _state_dir(cfg)
    state.mkdir(parents=True, exist_ok=True)
    log = state / "server.log"
    # the server's Python workers run this interpreter and must import udfs/ and pipeline/
    repo = str(Path(__file__).resolve().parent.parent)
    # no MLflow URIs from the launching shell: the jobs' configuration names the store, and a
    # stale MLFLOW_TRACKING_URI made the server's workers load another store's model
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYSPARK_GATEWAY_", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    env["PYSPARK_PYTHON"] = sys.executable
    with open(log, "ab") as out:
        proc = subprocess.Popen(server_command(cfg, port, master), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    info = ServerInfo(proc.pid, port, f"sc://127.0.0.1:{port}", str(log))
    deadline = time.monotonic() + timeout_s
    with rep.stage(f"starting a Spark Connect server on 127.0.0.1:{port} (pid {proc.pid})"):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the Spark Connect server exited ({proc.returncode}); see {log}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    _end(proc.pid)
                    raise RuntimeError(f"the Spark Connect server did not listen within {timeout_s:.0f} s; see {log}")
                time.sleep(0.25)
    tmp = state / "server.json.tmp"
    tmp.write_text(json.dumps(asdict(info)))
    os.replace(tmp, state / "server.json")
    return info


def _end(pid: int, grace_s: float = 30.0) -> None:
    """SIGTERM the server (the pid is the JVM: spark-submit execs it), SIGKILL after ``grace_s``."""
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(grace_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(grace_s)
    except psutil.NoSuchProcess:
        return


def stop(cfg: Config) -> ServerInfo | None:
    """Stop this root's server by its recorded pid; returns what was stopped (None: nothing ran)."""
    state = _state_dir(cfg) / "server.json"
    info = running(cfg)
    if info is not None:
        _end(info.pid)
    state.unlink(missing_ok=True)
    return info


def main(cfg: Config, args: Any, rep: Reporter) -> int:
    """`p300 connect serve [--port N] | status | stop`."""
    action = getattr(args, "action", "status")
    if action == "serve":
        if cfg.spark.master is None:
            raise ConfigError("spark.master is null: `p300 connect serve` starts a local server and needs a master")
        info = serve(cfg, port=getattr(args, "port", None) or 0, rep=rep)
        rep.result(f"Spark Connect server {info.url} (pid {info.pid}, log {info.log}); run jobs through it with "
                   f"--set spark.remote={info.url}")
        return 0
    if action == "stop":
        info = stop(cfg)
        rep.result(f"stopped the Spark Connect server pid {info.pid}" if info else "no Spark Connect server running")
        return 0
    info = running(cfg)
    rep.result(f"running: {info.url} (pid {info.pid})" if info else "no Spark Connect server running")
    return 0 if info else 1
