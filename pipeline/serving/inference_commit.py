"""The inference log's committer side: closed write-ahead segments into the Delta table
``inference_log``, the committer process beside the server, and the drain that a stop runs
so that "stopped" means "every answered request is in Delta".

Each closed segment becomes one Parquet file and one Delta commit whose transaction id is
(``APP_ID``, segment number); a segment whose number is not above the table's recorded
transaction version was committed before a crash and is only deleted, so nothing is
committed twice. Every committer holds ``committer.lock`` for its whole life, so committers
(one left by a killed server, the next server's, a stop's drain) run one after another.

The bodies are copied once: the segment is memory-mapped, pyarrow writes the small columns
and ``parquet_payload`` appends the bodies from the map as Parquet pages (pyarrow's writer
copied each body four to five times); delta-rs commits the file
(``create_write_transaction``). Per 2.3 MB request that is 0.7 ms of CPU, against 7.6 ms for
delta-rs's own writer (docs/performance.md), and the committer shares the server's cores.
"""
from __future__ import annotations

import fcntl
import json
import mmap
import os
import signal
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline.monitor_tables import arrow_schema
from pipeline.serving.parquet_payload import payload_size, splice_payload
from pipeline.serving.inference_wal import FREE_PREFIX, OPEN_SUFFIX, SEG_PREFIX, SEG_SUFFIX, WAL_DIR, Frames, \
    free_name, scan, segment_number

__all__ = ["APP_ID", "TABLE_CONFIGURATION", "SegmentCommitter", "committed_version", "drain", "drain_inference_log",
           "run_committer"]

APP_ID = "p300-serving-inference-log"  # the Delta transaction (txn) app id of the committer's commits
INDEXED = ("databricks_request_id", "client_request_id", "date", "timestamp_ms", "status_code",
           "sampling_fraction", "execution_time_ms")  # the leading columns: Delta statistics, Parquet statistics
TABLE_CONFIGURATION = {"delta.dataSkippingNumIndexedCols": str(len(INDEXED))}
_META_KEYS = ("endpoint_name", "model_name", "model_version", "served_entity_name")
_ALIGN = 4096  # O_DIRECT: buffer address, offsets and lengths in whole blocks
FREE_FILES = 3  # committed segment files kept for the writer to reuse; the rest are deleted


PAYLOAD = ("request", "response")  # the large text columns; parquet_payload writes them
PAYLOAD_AFTER = "execution_time_ms"  # the column before them in inference_log


def _bodies(buf: Any, spans: list[tuple[int, int]], valid: list[bool], present: list[bool]) -> list[Any]:
    """Zero-copy views of the segment's bodies. Bodies the server parsed (valid) are UTF-8 by
    construction (orjson refuses anything else); the rest are decoded with replacement
    characters. ``present`` False: None, null in the table (over ``monitoring.max_payload_kb``)."""
    view = memoryview(buf)
    return [None if not here else view[a:b] if ok else bytes(view[a:b]).decode("utf-8", "replace").encode()
            for (a, b), ok, here in zip(spans, valid, present)]


def segment_table(buf: Any, frames: Frames) -> tuple[Any, dict[str, list[Any]]]:
    """A segment's rows: the Arrow table of ``inference_log``'s columns but the payload ones,
    and the payload columns as bodies (views of ``buf``) in table order."""
    import pyarrow as pa

    metas = frames.metas
    ts = [int(m["timestamp_ms"]) for m in metas]
    status = [int(m["status_code"]) for m in metas]
    columns = {
        "databricks_request_id": [m["databricks_request_id"] for m in metas],
        "client_request_id": [m.get("client_request_id") for m in metas],
        "date": pa.array([t // 86_400_000 for t in ts], pa.int32()).cast(pa.date32()),
        "timestamp_ms": ts,
        "status_code": status,
        "sampling_fraction": [1.0] * len(metas),
        "execution_time_ms": [int(m["execution_time_ms"]) for m in metas],
        "served_entity_id": [m.get("served_entity_name") for m in metas],
        "request_metadata": [[(k, str(m[k])) for k in _META_KEYS if m.get(k) is not None] for m in metas],
    }
    schema = pa.schema([f for f in arrow_schema() if f.name not in PAYLOAD])
    table = pa.Table.from_arrays([c if isinstance(c := columns[f.name], pa.Array) else pa.array(c, f.type)
                                  for f in schema], schema=schema)
    bodies = {"request": _bodies(buf, frames.requests, [s < 400 for s in status],
                                 [not m.get("omitted") for m in metas]),
              "response": _bodies(buf, frames.responses, [True] * len(metas), [True] * len(metas))}
    return table, bodies


def _stats(table: Any) -> str:
    """The add action's statistics for the indexed columns (what Delta's data skipping reads)."""
    import pyarrow.compute as pc

    mins, maxs, nulls = {}, {}, {}
    for name in INDEXED:
        col = table.column(name)
        nulls[name] = col.null_count
        if col.null_count < len(col):
            mm = pc.min_max(col)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            mins[name], maxs[name] = (lo.isoformat(), hi.isoformat()) if name == "date" else (lo, hi)
    return json.dumps({"numRecords": table.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls})


def committed_version(table_uri: str) -> int | None:
    """The last segment number committed to the table (its Delta txn version), None if none."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(table_uri).transaction_version(APP_ID)
    except TableNotFoundError:
        return None


class SegmentCommitter:
    """Commits closed segments in order, exactly once each (the Delta txn version is the last
    segment committed). ``durable``: the Parquet file and the commit are fsynced before the
    segment is deleted (``monitoring.fsync`` other than ``none``)."""

    def __init__(self, wal_dir: Path, table_uri: str, log: Callable[[str], None], durable: bool = False) -> None:
        self.wal_dir, self.table_uri, self._log, self.durable = wal_dir, table_uri, log, durable
        self.done = committed_version(table_uri) or 0
        self.rows = 0
        self._buf: mmap.mmap | None = None  # the Parquet file's bytes before they go out
        self._dt: Any = None  # the table, loaded once; each commit then reads only what is new

    def commit_closed(self) -> int:
        closed = sorted((n, p) for p in self.wal_dir.glob(f"{SEG_PREFIX}*{SEG_SUFFIX}")
                        if (n := segment_number(p)) is not None)
        rows = 0
        for number, path in closed:
            if number > self.done:
                rows += self._commit(number, path)
                self.done = number
            self._recycle(number, path)
        self.rows += rows
        return rows

    def _recycle(self, number: int, path: Path) -> None:
        if len(list(self.wal_dir.glob(f"{FREE_PREFIX}*"))) < FREE_FILES:
            path.rename(self.wal_dir / free_name(number))
        else:
            path.unlink()

    def _write_parquet(self, table: Any, bodies: dict[str, list[Any]], path: str, segment_bytes: int) -> None:
        """The Parquet file into a reused, page-aligned buffer (pyarrow's small columns, then
        the bodies copied once, parquet_payload), then to the file with ``O_DIRECT``: the log
        is written once and read rarely, and copying it into new page-cache pages was 44% of
        the committer's time (docs/performance.md). A file system that refuses ``O_DIRECT``
        (tmpfs) gets the same bytes through the page cache."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        # dictionaries only where values repeat; statistics for Delta's indexed columns
        options = dict(compression="none", use_dictionary=["served_entity_id", "request_metadata"],
                       write_statistics=list(INDEXED), row_group_size=max(1, table.num_rows), write_page_index=False)
        # the small columns take fewer bytes than their records in the segment: never too small
        need = _ALIGN * (-(-(sum(map(payload_size, bodies.values())) + segment_bytes + (1 << 20)) // _ALIGN))
        if self._buf is None or len(self._buf) < need:
            self._buf = mmap.mmap(-1, need)
        sink = pa.FixedSizeBufferWriter(pa.py_buffer(self._buf))
        pq.write_table(table, sink, **options)
        n = splice_payload(self._buf, sink.tell(), bodies, after=PAYLOAD_AFTER, arrow_schema=arrow_schema())
        view = memoryview(self._buf)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
            end = _ALIGN * (-(-n // _ALIGN))  # O_DIRECT: whole blocks; the padding is cut below
        except OSError:
            fd, end = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), n
        try:
            done = 0
            while done < end:
                done += os.write(fd, view[done:end])
            os.ftruncate(fd, n)
            if self.durable:
                os.fsync(fd)
        finally:
            view.release()
            os.close(fd)

    def _commit(self, number: int, path: Path) -> int:
        from deltalake import CommitProperties, DeltaTable, Transaction
        from deltalake.transaction import AddAction

        size = path.stat().st_size
        if size == 0:
            return 0
        with open(path, "rb") as f:
            # populated at once: faulting the bodies in page by page cost as much as copying them
            mm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                           prot=mmap.PROT_READ)
        try:
            frames = scan(mm, number)
            if frames.torn:
                torn = path.with_suffix(".torn")
                torn.write_bytes(mm[frames.readable:frames.readable + frames.torn])
                self._log(f"inference log: {path.name} ends in {frames.torn} bytes of a record cut short "
                          f"(a request that got no answer); kept as {torn.name}")
            if not frames.metas:
                return 0
            table, bodies = segment_table(mm, frames)
            name = f"part-00000-{uuid.uuid4()}-c000.parquet"
            os.makedirs(self.table_uri, exist_ok=True)
            try:
                self._write_parquet(table, bodies, os.path.join(self.table_uri, name), size)
            finally:
                for views in bodies.values():  # the map closes only once no view of it is left
                    for v in views:
                        if isinstance(v, memoryview):
                            v.release()
            stats = _stats(table)
        finally:
            mm.close()
        try:
            if self._dt is None:
                self._dt = DeltaTable.create(self.table_uri, arrow_schema(), mode="ignore",
                                             configuration=TABLE_CONFIGURATION)
            else:
                self._dt.update_incremental()
            dt = self._dt
            dt.create_write_transaction(
                [AddAction(name, os.path.getsize(os.path.join(self.table_uri, name)), {}, int(time.time() * 1000),
                           True, stats)],
                mode="append", schema=arrow_schema(),
                commit_properties=CommitProperties(app_transactions=[Transaction(APP_ID, number,
                                                                                 int(time.time() * 1000))]))
            dt.update_incremental()  # to the version just committed
        except Exception:
            self._dt = None  # the next try loads the table afresh (it may have been replaced)
            raise
        if self.durable:  # the commit's JSON and the folder entries of both files
            log_dir = os.path.join(self.table_uri, "_delta_log")
            _fsync(os.path.join(log_dir, f"{dt.version():020d}.json"))
            _fsync(log_dir)
            _fsync(self.table_uri)
        return len(frames.metas)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _committer_lock(wal_dir: Path) -> Iterator[None]:
    with open(wal_dir / "committer.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        yield


def run_committer(wal_dir: Path, table_uri: str, interval_s: float, parent_pid: int, fsync: str = "none") -> int:
    """The committer process: commit closed segments every ``interval_s`` until SIGTERM or the
    server's death, then once more."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # below the server in the scheduler: on a saturated host the log lags (segments wait on
    # disk, nothing is lost) instead of taking CPU from requests; an idle moment catches up
    os.nice(10)
    with _committer_lock(wal_dir):
        committer = SegmentCommitter(wal_dir, table_uri, lambda msg: print(f"[p300-serving] {msg}", flush=True),
                                     durable=fsync != "none")
        while True:
            last = stop.is_set() or os.getppid() != parent_pid
            try:
                committer.commit_closed()
            except Exception as exc:  # noqa: BLE001 - the segments stay; the next round retries
                print(f"[p300-serving] inference log: commit failed, will retry: {type(exc).__name__}: {exc}",
                      flush=True)
            if last:
                return 0
            stop.wait(interval_s)


def drain(wal_dir: Path, table_uri: str, log: Callable[[str], None], durable: bool = False) -> int:
    """Commit what a stopped server left: segments still open (its writer is gone) and closed
    ones a committer did not reach (the server was killed, or its committer was). Waits for
    any committer still running; call only once the server process is gone."""
    if not wal_dir.is_dir():
        return 0
    with _committer_lock(wal_dir):
        for left in wal_dir.glob(f"{SEG_PREFIX}*{OPEN_SUFFIX}"):
            left.rename(left.with_suffix(SEG_SUFFIX))
        return SegmentCommitter(wal_dir, table_uri, log, durable).commit_closed()


def drain_inference_log(cfg: Any, log: Callable[[str], None]) -> int:
    """``drain`` for this root's endpoint server; 0 when there is no local log."""
    location = cfg.table("inference_log")
    if not cfg.is_local_root or not location.startswith("/"):
        return 0
    return drain(cfg.serving_dir / WAL_DIR, location, log, cfg.monitoring.fsync != "none")


if __name__ == "__main__":  # the server's committer process (InferenceLog.start)
    sys.exit(run_committer(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
