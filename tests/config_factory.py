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
