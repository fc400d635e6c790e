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

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import SparkSession

__all__ = ["DamagedTable", "clear_uncommitted"]

LOG_DIR = "_delta_log"
_EMPTY_OK_DIRS = ("_staged_commits", "_commits")


class DamagedTable(RuntimeError):
    """A table folder whose log holds files Delta cannot read as a table: left as it is."""


class _HadoopFs:
    """Hadoop's FileSystem through the session's JVM (local, dbfs:/, abfss:/, s3a:/ alike)."""

    def __init__(self, spark: SparkSession) -> None:
        self.jvm, self.spark = spark._jvm, spark

    def _path(self, path: str) -> Any:
        return self.jvm.org.apache.hadoop.fs.Path(path)

    def _fs(self, path: str) -> Any:
        return self._path(path).getFileSystem(self.spark._jsc.hadoopConfiguration())

    def exists(self, path: str) -> bool:
        return bool(self._fs(path).exists(self._path(path)))

    def entries(self, path: str) -> list[tuple[str, bool]]:
        return [(str(s.getPath().getName()), bool(s.isDirectory())) for s in self._fs(path).listStatus(self._path(path))]

    def rename(self, src: str, dst: str) -> bool:
        return bool(self._fs(src).rename(self._path(src), self._path(dst)))

    def delete_tree(self, path: str) -> bool:
        return bool(self._fs(path).delete(self._path(path), True))


class _LocalFs:
    """The driver's own files (Spark Connect has no JVM here; local paths and ``file:`` URIs only)."""

    @staticmethod
    def _p(path: str) -> Path:
        return Path(urlparse(path).path if path.startswith("file:") else path)

    def exists(self, path: str) -> bool:
        return self._p(path).exists()

    def entries(self, path: str) -> list[tuple[str, bool]]:
        return [(e.name, e.is_dir()) for e in self._p(path).iterdir()]

    def rename(self, src: str, dst: str) -> bool:
        os.rename(self._p(src), self._p(dst))
        return True

    def delete_tree(self, path: str) -> bool:
        shutil.rmtree(self._p(path))
        return True


def _committed_entries(fs: Any, log: str) -> list[str]:
    """Entries of a ``_delta_log`` that may be (part of) a commit; [] means uncommitted."""
    found = []
    for name, is_dir in fs.entries(log):
        if is_dir:
            if name in _EMPTY_OK_DIRS and not fs.entries(f"{log}/{name}"):
                continue
            found.append(name + "/")
        elif not name.startswith("."):  # hidden: the log store's temporary files, never a commit
            found.append(name)
    return found


def clear_uncommitted(spark: SparkSession, location: str) -> str | None:
    """Make the folder of a path table that Delta says does not exist ready for creation.

    Returns what was done (for the caller to report), or None when the folder is absent or
    empty. Raises DamagedTable, touching nothing, when the log may hold a commit."""
    classic = getattr(spark, "_jvm", None) is not None
    if not classic and urlparse(location).scheme not in ("", "file"):
        return None  # Spark Connect and a remote scheme: no file system to look at from here
    fs: Any = _HadoopFs(spark) if classic else _LocalFs()
    location = location.rstrip("/")
    if not fs.exists(location):
        return None
    if classic:  # Delta's own answer first: a commit may have appeared since the caller asked
        delta_log = spark._jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, location)
        if delta_log.tableExists():
            return None
    log = f"{location}/{LOG_DIR}"
    has_log = fs.exists(log)
    if has_log:
        committed = _committed_entries(fs, log)
        if committed:
            raise DamagedTable(
                f"{location} is not a Delta table this Delta can read, but {LOG_DIR}/ holds "
                f"{', '.join(committed[:5])}{' ...' if len(committed) > 5 else ''}: left as it is. Check it with "
                f"Delta (DESCRIBE HISTORY delta.`{location}`); if it is not needed, move the folder aside and rerun")
    others = [name for name, _ in fs.entries(location) if name != LOG_DIR]
    done = None
    if others:
        aside = f"{location}.uncommitted-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}"
        if not fs.rename(location, aside):
            raise OSError(f"could not move the uncommitted table folder {location} aside to {aside}")
        done = (f"{location} held {len(others)} data file(s) but no commit (a run killed while creating it): "
                f"moved aside to {aside}")
    elif has_log:
        if not fs.delete_tree(log):
            raise OSError(f"could not delete the uncommitted {LOG_DIR} of {location}")
        done = f"{location} had a {LOG_DIR} without any commit (a run killed while creating it): cleared"
    if classic:
        spark._jvm.org.apache.spark.sql.delta.DeltaLog.invalidateCache(
            spark._jsparkSession, spark._jvm.org.apache.hadoop.fs.Path(location))
    return done
