"""The endpoint server's inference log: a write-ahead file on the request path, Delta behind it.

Every answered invocation is appended, before its response is sent, to the open segment
of a write-ahead log under ``<root>/serving/inference_wal/`` (one ``writev``: no JSON
re-encoding, the request and response bytes go as they are). A background thread closes
the segment (a rename) every ``monitoring.flush_interval_s``, sooner when it passes
``monitoring.segment_mb``; a committer process beside the server commits each closed
segment to the Delta table ``inference_log`` as one append whose Delta transaction id is
(``APP_ID``, segment number), then deletes it. In a process of its own, building and
writing Parquet never holds the server's GIL (in-thread it halved throughput).

Crash safety: a ``kill -9`` loses nothing that was answered, since the write returned
before the response went out and the page cache outlives the process. On start,
leftover segments are committed in order; a segment whose number is not above the
table's recorded transaction version was committed before the crash and is only deleted,
so a crash between commit and delete writes no duplicates. A record cut short by the
crash (its request got no answer) ends the segment's readable part; those bytes are kept
beside it as ``.torn``. fsync policy ``flush``: the segment is fsynced when it is closed,
so a power loss can lose at most one flush interval; ``request``: fdatasync per record.

Written with ``deltalake`` (delta-rs) because the server is not a Spark process: a
segment's commit costs milliseconds in-process, where a Spark job would need a JVM
beside the server; tests/test_inference_log.py reads the table back with delta-spark.
"""
from __future__ import annotations

import os
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.monitor_tables import arrow_schema

import orjson  # pinned (requirements.txt); the server parses with it too

_dumps, _loads = orjson.dumps, orjson.loads

__all__ = ["APP_ID", "InferenceLog", "LoggedRequest", "read_segment", "new_request_id", "WAL_DIR", "open_inference_log",
           "client_request_id"]

APP_ID = "p300-serving-inference-log"  # the Delta transaction (txn) app id of the flusher's commits
WAL_DIR = "inference_wal"
_MAGIC = b"P3WL"
_HEAD = struct.Struct("<4sIII")  # magic, len(meta), len(request), len(response)
_TAIL = struct.Struct("<I")      # total frame length again: a torn frame cannot end well
_SEG_PREFIX, _SEG_SUFFIX, _OPEN_SUFFIX = "seg-", ".wal", ".open"  # .open: being written


def new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class LoggedRequest:
    """One answered invocation, as read back from a segment."""

    meta: dict[str, Any]
    request: bytes | memoryview
    response: bytes | memoryview


def _segment_name(number: int, open_: bool = False) -> str:
    return f"{_SEG_PREFIX}{number:012d}{_OPEN_SUFFIX if open_ else _SEG_SUFFIX}"


def _segment_number(path: Path) -> int | None:
    name = path.name
    for suffix in (_SEG_SUFFIX, _OPEN_SUFFIX):
        if name.startswith(_SEG_PREFIX) and name.endswith(suffix):
            digits = name[len(_SEG_PREFIX):-len(suffix)]
            return int(digits) if digits.isdigit() else None
    return None


def read_segment(path: Path) -> tuple[list[LoggedRequest], int, int]:
    """(records, bytes readable, file size): records up to the first torn or foreign frame."""
    data = memoryview(path.read_bytes())  # records are views into it: no copy per body
    out, pos = [], 0
    while pos + _HEAD.size <= len(data):
        magic, lm, lq, lr = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + lm + lq + lr + _TAIL.size
        if magic != _MAGIC or end > len(data) or _TAIL.unpack_from(data, end - _TAIL.size)[0] != end - pos:
            break
        a = pos + _HEAD.size
        out.append(LoggedRequest(_loads(data[a:a + lm].tobytes()), data[a + lm:a + lm + lq],
                                 data[a + lm + lq:a + lm + lq + lr]))
        pos = end
    return out, pos, len(data)


def _payload_column(bodies: list[Any], valid: list[bool], present: list[bool] | None = None) -> Any:
    """A large_string column built from one buffer and offsets: no Python str per body and no
    second pass over 2 MB bodies. Bodies the server parsed (valid) are UTF-8 by construction
    (orjson/json refuse anything else); the rest are decoded with replacement characters.
    ``present`` False: null (a payload over ``monitoring.max_payload_kb``)."""
    import numpy as np
    import pyarrow as pa

    parts = [b if ok else bytes(b).decode("utf-8", "replace").encode() for b, ok in zip(bodies, valid)]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in parts], out=offsets[1:])
    validity = None if present is None or all(present) else pa.array(present, pa.bool_()).buffers()[1]
    return pa.LargeStringArray.from_buffers(len(parts), pa.py_buffer(offsets), pa.py_buffer(b"".join(parts)),
                                            validity, -1 if validity is not None else 0)


def _to_arrow(records: list[LoggedRequest]) -> Any:
    import pyarrow as pa

    ts = [int(r.meta["timestamp_ms"]) for r in records]
    valid = [int(r.meta["status_code"]) < 400 for r in records]
    meta_keys = ("endpoint_name", "model_name", "model_version", "served_entity_name")
    columns = {
        "databricks_request_id": [r.meta["databricks_request_id"] for r in records],
        "client_request_id": [r.meta.get("client_request_id") for r in records],
        "date": pa.array([t // 86_400_000 for t in ts], pa.int32()).cast(pa.date32()),
        "timestamp_ms": ts,
        "status_code": [int(r.meta["status_code"]) for r in records],
        "sampling_fraction": [1.0] * len(records),
        "execution_time_ms": [int(r.meta["execution_time_ms"]) for r in records],
        "request": _payload_column([r.request for r in records], valid,
                                   [not r.meta.get("omitted") for r in records]),
        "response": _payload_column([r.response for r in records], [True] * len(records)),
        "served_entity_id": [r.meta.get("served_entity_name") for r in records],
        "request_metadata": [[(k, str(r.meta[k])) for k in meta_keys if r.meta.get(k) is not None] for r in records],
    }
    schema = arrow_schema()
    return pa.Table.from_arrays([pa.array(columns[f.name], f.type) if not isinstance(columns[f.name], pa.Array)
                                 else columns[f.name] for f in schema], schema=schema)


def _writer_properties() -> Any:
    """Payload columns written plain: no compression, dictionary or statistics. Each of those
    passes over every byte of a 2 MB body in the server process (measured: about 5x the write
    time); the rest of the row is small. Delta statistics only for the 7 leading columns."""
    from deltalake import WriterProperties
    from deltalake.writer.properties import ColumnProperties

    plain = ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE")
    return WriterProperties(compression="UNCOMPRESSED", column_properties={"request": plain, "response": plain})


TABLE_CONFIGURATION = {"delta.dataSkippingNumIndexedCols": "7"}  # through execution_time_ms


class _Committer:
    """Commits closed segments in order, exactly once each (the Delta txn version is the last
    segment committed); one per WAL directory at a time (``committer.lock``)."""

    def __init__(self, wal_dir: Path, table_uri: str, log: Callable[[str], None]) -> None:
        self.wal_dir, self.table_uri, self._log = wal_dir, table_uri, log
        self.done = committed_version(table_uri) or 0
        self.rows = 0

    def commit_closed(self) -> int:
        from deltalake import CommitProperties, Transaction, write_deltalake

        closed = sorted((n, p) for p in self.wal_dir.glob(f"{_SEG_PREFIX}*{_SEG_SUFFIX}")
                        if (n := _segment_number(p)) is not None)
        rows = 0
        for number, path in closed:
            if number > self.done:
                records, readable, size = read_segment(path)
                if readable < size:
                    path.with_suffix(".torn").write_bytes(path.read_bytes()[readable:])
                    self._log(f"inference log: {path.name} ends in {size - readable} bytes of a record cut short "
                              f"(a request that got no answer); kept as {path.with_suffix('.torn').name}")
                if records:
                    write_deltalake(self.table_uri, _to_arrow(records), mode="append",
                                    writer_properties=_writer_properties(), configuration=TABLE_CONFIGURATION,
                                    commit_properties=CommitProperties(
                                        app_transactions=[Transaction(APP_ID, number, int(time.time() * 1000))]))
                    rows += len(records)
                self.done = number
            path.unlink()
        self.rows += rows
        return rows


def committed_version(table_uri: str) -> int | None:
    """The last segment number committed to the table (its Delta txn version), None if none."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(table_uri).transaction_version(APP_ID)
    except TableNotFoundError:
        return None


class InferenceLog:
    """Append on the request path, commit in the background; ``start`` recovers, ``close`` flushes.

    ``committer="process"`` (the server's): a child process commits, so that building and
    writing Parquet never holds the server's GIL; the server only appends and, every
    ``flush_interval_s``, closes the open segment (a rename). ``"thread"``: in-process."""

    def __init__(self, wal_dir: Path, table_uri: str, flush_interval_s: float = 1.0, segment_mb: float = 64.0,
                 fsync: str = "flush", log: Callable[[str], None] | None = None, committer: str = "thread",
                 max_payload_kb: int | None = None) -> None:
        self.wal_dir = Path(wal_dir)
        self.max_payload = max_payload_kb * 1024 if max_payload_kb is not None else None
        self.table_uri = table_uri
        self.flush_interval_s = flush_interval_s
        self.segment_bytes = int(segment_mb * 2**20)
        self.fsync_each = fsync == "request"
        self.mode = committer
        self._log = log or (lambda msg: None)
        self._lock = threading.Lock()        # the open segment: appends vs rotation
        self._commit_lock = threading.Lock()  # one in-process committer at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._child: Any = None
        self._committer: _Committer | None = None
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
        meta = _dumps({"databricks_request_id": rid, "client_request_id": client_request_id, "omitted": omitted,
                       "timestamp_ms": timestamp_ms, "status_code": status_code,
                       "execution_time_ms": execution_time_ms, "endpoint_name": endpoint_name,
                       "served_entity_name": served_entity_name, "model_name": model_name,
                       "model_version": model_version})
        total = _HEAD.size + len(meta) + len(request) + len(response) + _TAIL.size
        parts = [_HEAD.pack(_MAGIC, len(meta), len(request), len(response)), meta, request, response,
                 _TAIL.pack(total)]
        with self._lock:
            written = os.writev(self._fd, parts)
            if written != total:  # a short write (disk full): finish it or fail loudly
                rest = b"".join(parts)[written:]
                while rest:
                    rest = rest[os.write(self._fd, rest):]
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
        for left in self.wal_dir.glob(f"{_SEG_PREFIX}*{_OPEN_SUFFIX}"):  # its writer is gone (server lock)
            left.rename(left.with_suffix(_SEG_SUFFIX))
        existing = [n for n in (_segment_number(p) for p in self.wal_dir.iterdir()) if n is not None]
        self._number = max([committed_version(self.table_uri) or 0, *existing]) + 1
        self._open(self._number)
        if self.mode == "process":
            import subprocess
            import sys

            self._child = subprocess.Popen(
                [sys.executable, "-m", "pipeline.serving.inference_commit", str(self.wal_dir), self.table_uri,
                 str(self.flush_interval_s), str(os.getpid())], stdin=subprocess.DEVNULL)
        else:
            self._committer = _Committer(self.wal_dir, self.table_uri, self._log)
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
        path = self.wal_dir / _segment_name(self._number, open_=True)
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
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
        path = self.wal_dir / _segment_name(number, open_=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        with self._lock:
            if self._fd < 0 or self._size == 0:
                return
            old, number = self._fd, self._number
            self._number += 1
            self._open(self._number)
        os.fsync(old)
        os.close(old)
        path = self.wal_dir / _segment_name(number, open_=True)
        path.rename(path.with_suffix(_SEG_SUFFIX))  # closed: the committer may take it

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the segments stay; the next round retries
                self._log(f"inference log: commit failed, will retry: {type(exc).__name__}: {exc}")
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()


def open_inference_log(cfg: Any, log: Callable[[str], None] | None = None) -> InferenceLog | None:
    """The server's log per ``monitoring``; None when it is off or the table is not a local path
    (on Databricks the endpoint's own inference table does this job)."""
    location = cfg.table("inference_log")
    if not cfg.monitoring.inference_log or not cfg.is_local_root or not location.startswith("/"):
        return None
    m = cfg.monitoring
    return InferenceLog(cfg.serving_dir / WAL_DIR, location, m.flush_interval_s, m.segment_mb, m.fsync, log,
                        committer="process", max_payload_kb=m.max_payload_kb).start()


def client_request_id(payload: Any) -> str | None:
    """A request's client_request_id: top level (Databricks' field) or in ``params``."""
    if not isinstance(payload, dict):
        return None
    value = payload.get("client_request_id")
    params = payload.get("params")
    if value is None and isinstance(params, dict):
        value = params.get("client_request_id")
    return None if value is None else str(value)[:256]


def record_invocation(log: InferenceLog, rec: Any) -> None:
    """Adapter for a serving hook that hands over one record object per invocation (fields:
    databricks_request_id, client_request_id, timestamp_ms, execution_time_ms, status_code,
    endpoint, served_entity, model_name, model_version, request, response)."""
    log.record(rec.request, rec.response, status_code=int(rec.status_code), timestamp_ms=int(rec.timestamp_ms),
               execution_time_ms=int(rec.execution_time_ms), endpoint_name=rec.endpoint,
               served_entity_name=rec.served_entity, model_name=rec.model_name, model_version=rec.model_version,
               client_request_id=rec.client_request_id, databricks_request_id=rec.databricks_request_id)
