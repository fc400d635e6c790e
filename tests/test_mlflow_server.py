"""`p300 train` against a real `mlflow server` process (loopback, SQLite backend), chosen the
way users choose it: MLFLOW_TRACKING_URI in the environment the CLI reads."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import mlflow
import numpy as np
import pytest

from config_factory import make_config
from pipeline import registry as reg
from pipeline.cli import run
from pipeline.config import load_config
from pipeline.report import Reporter
from synth_features import standard_frame, write_features


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A tracking server on 127.0.0.1 (own process group), stopped by its pid at the end."""
    base = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(base / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{base / 'server.db'}",
         "--default-artifact-root", (base / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}: {(base / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after 90 s: {(base / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield {"url": url, "artifacts": base / "artifacts", "pid": proc.pid}
    finally:
        # the server runs uvicorn as a child: signal the group this fixture created, by its pid
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        log.close()


def _embedded_store_is_empty(root) -> bool:
    """No runs, models or artifacts in the root's own MLflow store (the root fixture may have
    seeded it with an empty copy of a migrated one)."""
    import sqlite3

    db = root / "mlflow" / "mlflow.db"
    if (root / "mlflow" / "artifacts").exists() and any((root / "mlflow" / "artifacts").iterdir()):
        return False
    if not db.exists():
        return True
    with sqlite3.connect(db) as conn:
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "registered_models")]
    conn.close()
    return counts == [0, 0]


def test_train_against_a_tracking_server(spark, root, mlflow_server):
    write_features(spark, make_config(root), standard_frame())
    out, err = io.StringIO(), io.StringIO()
    code = run(["--root", str(root), "--set", "spark.master=local[2]", "--set", "training.cv_folds=3",
                "train", "--subjects", "1-3"],
               environ={"MLFLOW_TRACKING_URI": mlflow_server["url"]}, reporter=Reporter(out=out, err=err))
    assert code == 0, err.getvalue()

    cfg = load_config(root=str(root), env={"MLFLOW_TRACKING_URI": mlflow_server["url"]})
    assert cfg.tracking_uri == mlflow_server["url"]
    client = reg.mlflow_client(cfg)
    mv = reg.alias_version(client, cfg, reg.CHALLENGER)
    assert mv is not None and str(mv.version) == "1" and mv.current_stage == "Staging"
    assert reg.training_subjects(client, mv) == [1, 2, 3]
    assert reg.version_lineage(client, mv).features_version == 0
    run_ = client.get_run(mv.run_id)
    assert run_.info.artifact_uri.startswith(mlflow_server["artifacts"].as_uri())
    assert {a.path for a in client.list_artifacts(mv.run_id, "plots")} >= {"plots/roc_cv.png"}
    assert _embedded_store_is_empty(root)  # nothing went to the embedded store

    model = mlflow.pyfunc.load_model(reg.alias_uri(cfg, reg.CHALLENGER))
    x = mlflow.models.get_model_info(reg.alias_uri(cfg, reg.CHALLENGER)).signature.inputs.to_dict()
    assert x[0]["tensor-spec"]["shape"][1] == 16 * cfg.preprocess.n_times
    frame = standard_frame()

    pred = model.predict(np.stack(frame["features"].head(5).map(np.asarray)).astype(np.float32))
    assert pred.shape == (5, 2)

    # a second train against the server finds its version instead of registering another
    code = run(["--root", str(root), "--set", "spark.master=local[2]", "--set", "training.cv_folds=3",
                "train", "--subjects", "1-3"],
               environ={"MLFLOW_TRACKING_URI": mlflow_server["url"]}, reporter=Reporter(out=out, err=err))
    assert code == 0
    assert len(client.search_model_versions(f"name='{cfg.registry.model_name}'")) == 1
