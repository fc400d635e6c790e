"""The default storage root, the way a user meets it: the installed `p300` console script, run
in a fresh working directory with no --root, no P300_ROOT and no MLFLOW_TRACKING_URI. The cycle
(synth, ingest, preprocess, train, deploy, evaluate, promote) runs through, everything lands
under ./lakehouse, the working directory holds nothing else, and the startup lines a user
cannot act on are not in the output."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config_factory import user_env

pytestmark = pytest.mark.spark

P300 = Path(sys.executable).parent / "p300"
# lines a user cannot act on (pipeline/spark_quiet.py, conf/log4j2.properties, pipeline/registry.py,
# pipeline/evaluate.py): startup chatter, library warnings, tracebacks of idle Python workers
NOISE = ("Using incubator modules", "NativeCodeLoader", "resolves to a loopback address",
         "Using Spark's default log4j profile", "Creating initial MLflow database tables", "[alembic.",
         "Validating input example", "Successfully registered model", "Created version", "Warning:", "Traceback",
         "BrokenPipeError")
STEPS = [
    ["synth", "--subjects", "3", "--minutes", "1", "--channels", "8"],
    ["ingest"],
    ["preprocess"],
    ["train"],  # training.train_fraction 0.5: subjects 1-2; subject 3 is the holdout
    ["deploy"],
    ["evaluate"],
    ["promote"],
]


def _env() -> dict[str, str]:
    """The caller's environment without anything that names a root or an MLflow store
    (PYTHONPATH stays: a worktree's code must win over the venv's editable install)."""
    return user_env()


def _p300(cwd: Path, *argv: str) -> str:
    proc = subprocess.run([str(P300), *argv], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    print(f"$ p300 {' '.join(argv)}\n{out}")
    assert proc.returncode == 0, f"p300 {' '.join(argv)} exited {proc.returncode}:\n{out[-4000:]}"
    return out


def test_the_cycle_on_the_default_root_writes_only_under_it(tmp_path: Path):
    from deltalake import DeltaTable
    from mlflow import MlflowClient

    assert P300.exists(), f"{P300}: the package's console script is not installed in this environment"
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    root = cwd / "lakehouse"
    try:
        outputs = [_p300(cwd, *argv) for argv in STEPS]
    finally:  # the server deploy started outlives its process: stop it by its recorded pid
        stop = subprocess.run([str(P300), "endpoint", "stop"], cwd=cwd, env=_env(), capture_output=True, text=True)
        print(stop.stdout + stop.stderr)
    assert "writing 3 subjects" in outputs[0] and str(root / "landing-zone") in outputs[0]
    for line in NOISE:
        assert not any(line in out for out in outputs), f"{line!r} in normal output"

    raw = DeltaTable(str(root / "delta" / "raw_eeg")).to_pandas(columns=["subject_id"])
    features = DeltaTable(str(root / "delta" / "features")).to_pandas(columns=["subject_id", "label"])
    assert set(raw["subject_id"]) == set(features["subject_id"]) == {1, 2, 3}
    assert set(features["label"]) == {1, 2}  # NonTarget and Target epochs of every subject
    log = DeltaTable(str(root / "delta" / "preprocess_log")).to_pandas(columns=["subject_id", "status"])
    assert sorted(log.loc[log["status"] == "ok", "subject_id"]) == [1, 2, 3]

    store = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)  # not a registry an earlier test set globally
    model = client.get_registered_model("p300-classifier")
    assert {k: str(v) for k, v in model.aliases.items()} == {"champion": "1"}  # promoted; the challenger alias moved to champion
    (version,) = client.search_model_versions("name = 'p300-classifier'")
    assert version.source.startswith(("models:/", (root / "mlflow" / "artifacts").as_uri()))
    evaluation = client.get_experiment_by_name("p300-evaluation")
    assert evaluation.artifact_location.startswith((root / "mlflow" / "artifacts").as_uri())
    (run,) = client.search_runs([evaluation.experiment_id])
    assert run.data.tags["holdout_subjects"] == "3" and run.data.metrics["failed_requests"] == 0

    assert (root / "serving" / "server.log").is_file()  # the endpoint server's state and log
    assert sorted(p.name for p in cwd.iterdir()) == ["lakehouse"]  # no spark-warehouse/, mlruns/, derby.log
