"""What a crash during a table's creation leaves behind, and how creation gets past it.

Delta (4.4) creates a path table in two steps: it makes ``_delta_log/`` (and, in it,
``_staged_commits/`` for coordinated commits), then writes commit 0 as a hidden temporary
file renamed to ``00000000000000000000.json``. A process killed between the two leaves a
folder that is not a table (``DeltaTable.isDeltaTable`` says no: there is no commit) yet
makes ``DeltaTable.createIfNotExists`` fail with DELTA_TABLE_NOT_FOUND; Delta also refuses
to create a table in a folder that holds files but no log (DELTA_MISSING_DELTA_TABLE). So
every rerun failed the same way until someone deleted folders by hand.

``clear_uncommitted`` is called by table creation when Delta says the table does not
exist. It tells an uncommitted folder from a damaged table: a ``_delta_log`` counts as
uncommitted only when it holds nothing but hidden files (the log store's ``.*.tmp``
leftovers and their checksums) and empty ``_staged_commits``/``_commits`` folders. Then:

* the uncommitted ``_delta_log`` is deleted (it holds no commit, so no data is lost);
* data files beside it (a first write killed before its commit; no commit references
  them) are not deleted: the folder is moved aside to ``<table>.uncommitted-<UTC time>``
  for the user to inspect or delete.

Anything else in the log (a commit, a checkpoint, ``_last_checkpoint``, an unknown file)
means a table Delta cannot read: nothing is touched, and the error names the folder.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pyspark.sql import SparkSession

__all__ = ["DamagedTable", "clear_uncommitted"]

LOG_DIR = "_delta_log"
_EMPTY_OK_DIRS = ("_staged_commits", "_commits")


class DamagedTable(RuntimeError):
    """A table folder whose log holds files Delta cannot read as a table: left as it is."""


def _committed_entries(fs: Any, log: Any) -> list[str]:
    """Entries of a ``_delta_log`` that may be (part of) a commit; [] means uncommitted."""
    found = []
    for status in fs.listStatus(log):
        name = str(status.getPath().getName())
        if status.isDirectory():
            if name in _EMPTY_OK_DIRS and len(fs.listStatus(status.getPath())) == 0:
                continue
            found.append(name + "/")
        elif not name.startswith("."):  # hidden: the log store's temporary files, never a commit
            found.append(name)
    return found


def clear_uncommitted(spark: SparkSession, location: str) -> str | None:
    """Make the folder of a path table that Delta says does not exist ready for creation.

    Returns what was done (for the caller to report), or None when the folder is absent or
    empty. Raises DamagedTable, touching nothing, when the log may hold a commit."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return None
    delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, location)
    if delta_log.tableExists():
        return None  # a commit appeared (another process created it): nothing to clear
    log = jvm.org.apache.hadoop.fs.Path(path, LOG_DIR)
    has_log = bool(fs.exists(log))
    if has_log:
        committed = _committed_entries(fs, log)
        if committed:
            raise DamagedTable(
                f"{location} is not a Delta table this Delta can read, but {LOG_DIR}/ holds "
                f"{', '.join(committed[:5])}{' ...' if len(committed) > 5 else ''}: left as it is. Check it with "
                f"Delta (DESCRIBE HISTORY delta.`{location}`); if it is not needed, move the folder aside and rerun")
    others = [str(s.getPath().getName()) for s in fs.listStatus(path) if str(s.getPath().getName()) != LOG_DIR]
    done = None
    if others:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = jvm.org.apache.hadoop.fs.Path(f"{location.rstrip('/')}.uncommitted-{stamp}")
        if not fs.rename(path, aside):
            raise OSError(f"could not move the uncommitted table folder {location} aside to {aside.toString()}")
        done = (f"{location} held {len(others)} data file(s) but no commit (a run killed while creating it): "
                f"moved aside to {aside.toString()}")
    elif has_log:
        if not fs.delete(log, True):
            raise OSError(f"could not delete the uncommitted {LOG_DIR} of {location}")
        done = f"{location} had a {LOG_DIR} without any commit (a run killed while creating it): cleared"
    jvm.org.apache.spark.sql.delta.DeltaLog.invalidateCache(spark._jsparkSession, path)
    return done
