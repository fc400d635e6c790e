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
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from chispa import assert_df_equality
from config_factory import make_config

from pipeline import job_runner
from pipeline.arguments import build_parser
from pipeline.tables import raw_samples
from pipeline.report import Reporter
from pipeline.submit import code_archive, spark_home, submit_command, submit_env
from pipeline.synth import synth_landing_zone

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


def _submit(cluster: Standalone, cfg, p300_args: list[str], workdir: Path) -> subprocess.Popen:
    """Launch `p300 <p300_args>` through spark-submit on the cluster; the caller waits."""
    cmd = submit_command(cfg, p300_args, cluster.master_url,
                         spark_conf={"spark.executor.memory": "512m", "spark.cores.max": "2"},
                         py_files=[str(code_archive(workdir))])
    # its own process group: the spark-submit JVM and the Python driver it starts
    return subprocess.Popen(cmd, env=cluster.clean_env(), cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGKILL)  # the group this test created, by its id
    return proc.communicate()[0]


def _wait(proc: subprocess.Popen) -> str:
    try:
        out, _ = proc.communicate(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        out = _kill(proc)
        pytest.fail(f"spark-submit still running after {JOB_TIMEOUT_S}s:\n{out[-6000:]}")
    assert proc.returncode == 0, f"spark-submit failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def _app_executors(cluster: Standalone) -> list[int]:
    """Executors each worker ran for the one application this cluster has seen."""
    state = cluster.state()
    (app,) = state["completedapps"] + state["activeapps"]
    counts = []
    for url in cluster.worker_ui_urls:
        state = _get_json(url + "/json/")
        execs = state.get("executors", []) + state.get("finishedexecutors", [])
        counts.append(sum(1 for e in execs if e.get("appid") == app["id"]))
    return counts


def test_ingest_and_preprocess_on_the_cluster_equal_a_local_run(standalone, spark, tmp_path):
    local_root, cluster_root = tmp_path / "local", tmp_path / "cluster"
    synth_landing_zone(local_root / "landing-zone", 3, minutes=0.5, n_channels=8, sfreq=128.0, seed=7)
    shutil.copytree(local_root / "landing-zone", cluster_root / "landing-zone")
    local_cfg, cluster_cfg = make_config(local_root), make_config(cluster_root)

    # the cluster run: its own driver process (spark-submit), one executor per worker
    proc = _submit(standalone, cluster_cfg, ["--root", str(cluster_root), "job", "ingest_and_preprocess"], tmp_path)
    try:
        # meanwhile the same job on the test's local session, in this process
        job = build_parser().parse_args(["job", "ingest_and_preprocess"])
        assert job_runner.main(local_cfg, job, Reporter(quiet=True)) == 0
    except BaseException:
        _kill(proc)
        raise
    out = _wait(proc)
    assert "job ingest_and_preprocess: 2 task(s) done" in out
    assert _app_executors(standalone) == [1, 1]
    assert not list((cluster_root / "landing-zone").glob("*.parquet"))  # all three ingested and archived

    def table(cfg, name):
        return spark.read.format("delta").load(cfg.table(name))

    # sample for sample (the two runs chunk raw_eeg differently: the CLI's default vs the tests' 2048)
    raw_local = raw_samples(spark, local_cfg)
    assert raw_local.select("subject_id").distinct().count() == 3
    assert_df_equality(raw_samples(spark, cluster_cfg), raw_local, ignore_row_order=True)
    features_local = table(local_cfg, "features")
    assert features_local.count() > 30
    assert_df_equality(table(cluster_cfg, "features"), features_local, ignore_row_order=True)
    for name, cols in (("ingest_log", ["file", "subject_id", "status", "rows"]),
                       ("preprocess_log", ["subject_id", "status", "n_events", "n_rejected", "n_epochs"])):
        assert_df_equality(table(cluster_cfg, name).select(cols), table(local_cfg, name).select(cols),
                           ignore_row_order=True)
