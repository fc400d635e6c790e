"""A real Spark standalone cluster on 127.0.0.1: one master, two workers, a separate driver.

The master and workers are the JVM daemons of the pip package, started with
``spark-class`` (the package ships no start-master.sh); the job goes through
``spark-submit`` with Delta's jars, exactly as ``p300-submit`` launches it. Each worker
runs its own executor and Python workers, so a result equal to the local run's shows
that nothing depends on executors sharing the driver's Python state. Every process
started here is stopped by its pid in the fixture's finalizer.

Deselect with ``-m "not cluster"``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.submit import code_archive, spark_home, submit_command, submit_env

pytestmark = pytest.mark.cluster

START_TIMEOUT_S = 90
JOB_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@dataclass
class Standalone:
    master_url: str
    ui_url: str
    worker_ui_urls: list[str]
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def state(self) -> dict:
        return _get_json(self.ui_url + "/json/")

    def clean_env(self) -> dict[str, str]:
        """spark-submit's environment, without any p300/MLflow settings of the caller's shell."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("P300", "MLFLOW_", "PYSPARK_"))}
        return submit_env(self.master_url, env)


def _wait_for_workers(cluster: Standalone, count: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last: object = None
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{cluster.log_tail(name)}")
        try:
            state = cluster.state()
            alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
            if len(alive) >= count:
                return
            last = f"{len(alive)} worker(s) alive"
        except OSError as exc:  # master UI not up yet
            last = exc
        time.sleep(0.5)
    raise RuntimeError(f"standalone cluster not ready after {START_TIMEOUT_S}s ({last}):\n"
                       + "\n".join(f"--- {n}\n{cluster.log_tail(n)}" for n in cluster.procs))


@pytest.fixture(scope="module")
def standalone(tmp_path_factory) -> Standalone:
    """Master + two 1-core, 1 GiB workers on loopback; stopped by pid afterwards."""
    workdir = tmp_path_factory.mktemp("standalone")
    port, ui = _free_port(), _free_port()
    cluster = Standalone(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}", [], workdir)
    base_env = cluster.clean_env()
    base_env.update({
        "SPARK_LOCAL_IP": "127.0.0.1",      # daemons and their web UIs bind loopback only
        "SPARK_PUBLIC_DNS": "127.0.0.1",
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",  # no fixed REST port 6066
        "SPARK_DAEMON_MEMORY": "256m",
    })
    spark_class = str(spark_home() / "bin" / "spark-class")
    logs = []

    def start(name: str, args: list[str], **extra_env: str) -> None:
        log = open(workdir / f"{name}.log", "wb")
        logs.append(log)
        cluster.procs[name] = subprocess.Popen([spark_class, *args], stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, cwd=workdir,
                                               env={**base_env, **extra_env})

    try:
        start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(port), "--webui-port", str(ui)])
        for i in (1, 2):
            wui = _free_port()
            cluster.worker_ui_urls.append(f"http://127.0.0.1:{wui}")
            (workdir / f"worker{i}").mkdir()
            start(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", cluster.master_url, "--host", "127.0.0.1",
                                 "--cores", "1", "--memory", "1g", "--webui-port", str(wui),
                                 "--work-dir", str(workdir / f"worker{i}")],
                  SPARK_LOCAL_DIRS=str(workdir / f"worker{i}"))
        _wait_for_workers(cluster, 2)
        yield cluster
    finally:
        for name in reversed(list(cluster.procs)):  # workers first: each stops its executors
            cluster.procs[name].terminate()
        for name, proc in cluster.procs.items():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for log in logs:
            log.close()


def _submit(cluster: Standalone, cfg, app_args: list[str], app: str | None = None,
            tmp: Path | None = None) -> subprocess.CompletedProcess:
    cmd = submit_command(cfg, app_args, cluster.master_url, app=app,
                         spark_conf={"spark.executor.memory": "512m", "spark.cores.max": "2"},
                         py_files=[str(code_archive(tmp))])
    proc = subprocess.run(cmd, env=cluster.clean_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
                          cwd=tmp)
    assert proc.returncode == 0, f"spark-submit failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return proc


def _executors_per_worker(cluster: Standalone, app_id: str) -> list[int]:
    counts = []
    for url in cluster.worker_ui_urls:
        state = _get_json(url + "/json/")
        execs = state.get("executors", []) + state.get("finishedexecutors", [])
        counts.append(sum(1 for e in execs if e.get("appid") == app_id))
    return counts


TINY_APP = '''
import os, sys
import pandas as pd
from pyspark.sql import SparkSession

def per_group(pdf: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"g": [int(pdf.g.iloc[0])], "n": [len(pdf)], "total": [int(pdf.id.sum())]})

if __name__ == "__main__":
    out = sys.argv[1]
    spark = SparkSession.builder.getOrCreate()
    df = spark.range(0, 10000, numPartitions=4).selectExpr("id % 7 AS g", "id")
    res = df.groupBy("g").applyInPandas(per_group, "g long, n long, total long")
    res.write.format("delta").mode("overwrite").save(out)
    print("APP_ID", spark.sparkContext.applicationId, spark.sparkContext.master)
'''


def test_tiny_delta_app_runs_on_both_workers(standalone, spark, tmp_path):
    from chispa import assert_df_equality

    from conftest import make_config

    app = tmp_path / "tiny_app.py"
    app.write_text(TINY_APP)
    out = tmp_path / "out"
    proc = _submit(standalone, make_config(tmp_path / "root"), [str(out)], app=str(app), tmp=tmp_path)
    app_id = next(l.split()[1] for l in proc.stdout.splitlines() if l.startswith("APP_ID"))
    assert standalone.master_url in proc.stdout
    assert _executors_per_worker(standalone, app_id) == [1, 1]
    import pandas as pd

    expected = spark.createDataFrame(pd.DataFrame({"g": range(7)}).assign(
        n=lambda f: [len(range(g, 10000, 7)) for g in f.g], total=lambda f: [sum(range(g, 10000, 7)) for g in f.g]))
    assert_df_equality(spark.read.format("delta").load(str(out)), expected, ignore_row_order=True,
                       ignore_nullable=True)
