"""Opening MLflow's SQLite stores from several threads at once (pipeline/registry.py).

MLflow runs alembic's upgrade whenever it opens a SQL store, and alembic keeps its migration
context in module globals; the endpoint server opens stores from request threads and model
loaders at once. Each thread here opens its own store (the builders MLflow calls, past its
per-URI cache), released together by a barrier."""
from __future__ import annotations

import threading

from config_factory import make_config
from pipeline import registry as reg


def test_stores_opened_by_threads_at_once(tmp_path):
    cfg = make_config(tmp_path / "lakehouse")
    reg.mlflow_client(cfg)  # the store exists, with every table
    builders = [reg._sqlite_store, reg._sqlite_registry_store] * 3
    start = threading.Barrier(len(builders))
    errors: list[str] = []

    def open_store(build) -> None:
        start.wait()
        try:
            build(cfg.tracking_uri)
        except Exception as exc:  # noqa: BLE001 - every failure is collected and reported
            errors.append(f"{build.__name__}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=open_store, args=(b,)) for b in builders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread still opening its store after 120s"
    assert errors == []
