"""An MLflow SQLite store migrated once per test session, copied into each test's root.

A fresh store applies every schema migration of MLflow's (seconds, per test that opens one);
a copy of a migrated empty store is the same store, opened in a tenth of a second. The only
path inside it, the default experiment's artifact location, is rewritten to the copy's own.
"""
from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

__all__ = ["make_template", "seed_store"]


def _artifacts_uri(db: Path) -> str:
    return (db.parent / "artifacts").as_uri()  # where pipeline/registry.py puts a store's artifacts


def make_template(folder: Path) -> Path:
    """A migrated, empty tracking and registry store (one SQLite file) in ``folder``."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = folder / "mlflow.db"
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # the migrations' INFO lines
    try:
        SqlAlchemyStore(f"sqlite:///{db}", _artifacts_uri(db))  # creates every table, the registry's too
    finally:
        logging.disable(previous)
    return db


def seed_store(template: Path, db: Path) -> None:
    """``db`` becomes a copy of ``template`` whose default experiment stores under ``db``'s folder."""
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)",
                     (_artifacts_uri(template), _artifacts_uri(db)))
    conn.close()
