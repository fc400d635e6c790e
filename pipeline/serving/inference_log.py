"""The endpoint server's inference log: a write-ahead file on the request path, Delta behind it.

Every answered invocation is appended, before its response is sent, to the open segment
of a write-ahead log under ``<root>/serving/inference_wal/`` (one ``writev``: no JSON
re-encoding, the request and response bytes go as they are). A background thread closes
the segment (a rename) every ``monitoring.flush_interval_s``, sooner when it passes
``monitoring.segment_mb``; a committer process beside the server commits each closed
segment to the Delta table ``inference_log`` as one append whose Delta transaction id is
(``APP_ID``, segment number), then recycles its file (or deletes it). In a process of its
own, building and writing Parquet never holds the server's GIL (in-thread it halved
throughput).

Crash safety: a ``kill -9`` loses nothing that was answered, since the write returned
before the response went out and the page cache outlives the process. On start,
leftover segments are committed in order; a segment whose number is not above the
table's recorded transaction version was committed before the crash and is only put
aside, so a crash between commit and delete writes no duplicates. A record cut short by the
crash (its request got no answer) ends the segment's readable part; those bytes are kept
beside it as ``.torn``. fsync policy ``none``: nothing is fsynced (the page cache holds what a
kill -9 leaves; a power loss can lose what the kernel had not yet written, as with any local
Delta write); ``flush``: the segment is fsynced when it is closed and the committer fsyncs the
Parquet file and the commit before deleting it, so a power loss loses at most one flush interval;
``request``: also fdatasync per record.

The segment format is ``inference_wal``; the committer (Parquet with pyarrow, commits with
``deltalake``, no Spark beside the server) is ``inference_commit``. tests/test_inference_log.py
reads the table back with delta-spark.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

from pipeline.serving.inference_commit import SegmentCommitter, committed_version
from pipeline.serving.inference_wal import FREE_PREFIX, OPEN_SUFFIX, SEG_PREFIX, SEG_SUFFIX, WAL_DIR, frame, \
    free_name, new_request_id, segment_name, segment_number

import orjson  # pinned (requirements.txt); the server parses with it too

__all__ = ["InferenceLog", "open_inference_log", "record_invocation"]


class InferenceLog:
    """Append on the request path, commit in the background; ``start`` recovers, ``close`` flushes.

    ``committer="process"`` (the server's): a child process commits, so that building and
    writing Parquet never holds the server's GIL; the server only appends and, every
    ``flush_interval_s``, closes the open segment (a rename). ``"thread"``: in-process."""

    def __init__(self, wal_dir: Path, table_uri: str, flush_interval_s: float = 1.0, segment_mb: float = 64.0,
                 fsync: str = "none", log: Callable[[str], None] | None = None, committer: str = "thread",
                 max_payload_kb: int | None = None) -> None:
        self.wal_dir = Path(wal_dir)
        self.max_payload = max_payload_kb * 1024 if max_payload_kb is not None else None
        self.table_uri = table_uri
        self.flush_interval_s = flush_interval_s
        self.segment_bytes = int(segment_mb * 2**20)
        self.fsync = fsync
        self.fsync_each = fsync == "request"
        self.mode = committer
        self._log = log or (lambda msg: None)
        self._lock = threading.Lock()        # the open segment: appends vs rotation
        self._commit_lock = threading.Lock()  # one in-process committer at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._child: Any = None
        self._committer: SegmentCommitter | None = None
        self._fd = -1
        self._number = 0
        self._size = 0

    @property
    def committed_rows(self) -> int:
        return self._committer.rows if self._committer else 0

    # ---- request path -------------------------------------------------------------------
    def record(self, request: bytes, response: bytes, *, status_code: int, timestamp_ms: int,
               execution_time_ms: int, endpoint_name: str, served_entity_name: str | None,
               model_name: str | None, model_version: str | None, client_request_id: str | None = None,
               databricks_request_id: str | None = None) -> str:
        """Append one answered request; returns its databricks_request_id. Call before responding."""
        rid = databricks_request_id or new_request_id()
        omitted = self.max_payload is not None and len(request) > self.max_payload
        if omitted:  # logged as null, as Databricks does past its payload limit; the row stays
            request = b""
        meta = orjson.dumps({"databricks_request_id": rid, "client_request_id": client_request_id, "omitted": omitted,
                       "timestamp_ms": timestamp_ms, "status_code": status_code,
                       "execution_time_ms": execution_time_ms, "endpoint_name": endpoint_name,
                       "served_entity_name": served_entity_name, "model_name": model_name,
                       "model_version": model_version})
        with self._lock:
            parts = frame(self._number, meta, request, response)
            total = sum(map(len, parts))
            written = os.pwritev(self._fd, parts, self._size)
            if written != total:  # a short write (disk full): finish it or fail loudly
                rest = b"".join(parts)[written:]
                while rest:
                    rest = rest[os.pwrite(self._fd, rest, self._size + total - len(rest)):]
            if self.fsync_each:
                os.fdatasync(self._fd)
            self._size += total
            full = self._size >= self.segment_bytes
        if full:
            self._wake.set()
        return rid

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> "InferenceLog":
        """Close what a previous process left open, open a new segment numbered after every
        existing and committed one, and start committing (leftovers first)."""
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        for left in self.wal_dir.glob(f"{SEG_PREFIX}*{OPEN_SUFFIX}"):  # its writer is gone (server lock)
            left.rename(left.with_suffix(SEG_SUFFIX))
        existing = [n for n in (segment_number(p) for p in self.wal_dir.iterdir()) if n is not None]
        self._number = max([committed_version(self.table_uri) or 0, *existing]) + 1
        self._open(self._number)
        if self.mode == "process":
            import subprocess
            import sys

            self._child = subprocess.Popen(
                [sys.executable, "-m", "pipeline.serving.inference_commit", str(self.wal_dir), self.table_uri,
                 str(self.flush_interval_s), str(os.getpid()), self.fsync], stdin=subprocess.DEVNULL)
        else:
            self._committer = SegmentCommitter(self.wal_dir, self.table_uri, self._log, durable=self.fsync != "none")
            self.flush()  # leftovers, before start returns (the thread's first pass is an interval later)
        self._thread = threading.Thread(target=self._run, name="inference-log-flusher", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the flusher and commit everything written so far."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        path = self.wal_dir / segment_name(self._number, open_=True)
        if path.exists() and self._size == 0:  # nothing of its own: fresh, or a recycled file to keep
            if path.stat().st_size == 0:
                path.unlink()
            else:
                path.rename(self.wal_dir / free_name(self._number))
        if self._child is not None:  # its last pass commits what flush() closed
            self._child.terminate()
            self._child.wait()

    def flush(self) -> int:
        """Close the open segment (if it holds anything); in-process, commit every closed one."""
        with self._commit_lock:
            self._rotate()
            return self._committer.commit_closed() if self._committer else 0

    # ---- internals ------------------------------------------------------------------------
    def _open(self, number: int) -> None:
        """Open segment ``number``, in a recycled file when the committer left one (written over
        from the start; see inference_wal)."""
        path = self.wal_dir / segment_name(number, open_=True)
        for free in sorted(self.wal_dir.glob(f"{FREE_PREFIX}*")):
            try:
                free.rename(path)
                break
            except FileNotFoundError:  # the committer deleted it meanwhile
                continue
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        self._size = 0

    def _rotate(self) -> None:
        with self._lock:
            if self._fd < 0 or self._size == 0:
                return
            old, number = self._fd, self._number
            self._number += 1
            self._open(self._number)
        if self.fsync != "none":
            os.fsync(old)
        os.close(old)
        path = self.wal_dir / segment_name(number, open_=True)
        path.rename(path.with_suffix(SEG_SUFFIX))  # closed: the committer may take it

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return  # close() flushes
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the segments stay; the next round retries
                self._log(f"inference log: commit failed, will retry: {type(exc).__name__}: {exc}")


def open_inference_log(cfg: Any, log: Callable[[str], None] | None = None) -> InferenceLog | None:
    """The server's log per ``monitoring``; None when it is off or the table is not a local path
    (on Databricks the endpoint's own inference table does this job)."""
    location = cfg.table("inference_log")
    if not cfg.monitoring.inference_log or not cfg.is_local_root or not location.startswith("/"):
        return None
    m = cfg.monitoring
    return InferenceLog(cfg.serving_dir / WAL_DIR, location, m.flush_interval_s, m.segment_mb, m.fsync, log,
                        committer="process", max_payload_kb=m.max_payload_kb).start()


def record_invocation(log: InferenceLog, rec: Any) -> None:
    """Adapter for a serving hook that hands over one record object per invocation (fields:
    databricks_request_id, client_request_id, timestamp_ms, execution_time_ms, status_code,
    endpoint, served_entity, model_name, model_version, request, response)."""
    log.record(rec.request, rec.response, status_code=int(rec.status_code), timestamp_ms=int(rec.timestamp_ms),
               execution_time_ms=int(rec.execution_time_ms), endpoint_name=rec.endpoint,
               served_entity_name=rec.served_entity, model_name=rec.model_name, model_version=rec.model_version,
               client_request_id=rec.client_request_id, databricks_request_id=rec.databricks_request_id)
