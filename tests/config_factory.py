"""The test configuration factory, importable by test modules and helpers (a conftest
module cannot be imported by name: tests/ and tests/faults/ each have one)."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import Config, load_config


def make_config(root: Path, **overrides: str) -> Config:
    """A test configuration on a temporary root (the environment is ignored on purpose)."""
    # small raw_eeg chunks, so that test recordings (seconds to a minute) span several rows,
    # and C1-only JIT whatever the cores, so the suite's JVM is the same everywhere
    sets = {"spark.master": "local[2]", "spark.shuffle_partitions": "2", "storage.raw_chunk_samples": "2048",
            "spark.jit": "c1", **overrides}
    return load_config(root=str(root), env={}, overrides=sets)


# what an earlier test or a classic session may have exported into this process's environment
_EXPORTED = ("P300", "MLFLOW_", "PYSPARK_GATEWAY", "SPARK_CONNECT", "SPARK_REMOTE")


def user_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess run as a user's shell would run it: no P300 settings, no
    MLflow URIs (mlflow.set_tracking_uri exports them), no gateway or Connect variables."""
    import os

    return {**{k: v for k, v in os.environ.items() if not k.startswith(_EXPORTED)}, **extra}
