"""The endpoint server's inference log: under concurrent load, and across a kill -9.

A real server process with a real model; clients with unique client_request_ids; the
log is read back with delta-spark (the table is written by deltalake in the server)."""
from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import numpy as np
import orjson
import pytest
from pyspark.sql import functions as F

from pipeline.serving.inference_log import InferenceLog
from pipeline.serving.inference_wal import read_segment
from pipeline.serving import apply_served_versions, invocation_url, start_local_server, stop_local_server, \
    workspace_client
from pipeline.storage import read_table
from serving_fixtures import register_p300_version

pytestmark = pytest.mark.server
N_FEATURES = 12


def _load(url: str, headers: dict, clients: int, stop: threading.Event, ok: set, failed: set,
          per_client: int | None = None) -> list[threading.Thread]:
    def worker(c: int) -> None:
        rng = np.random.default_rng(c)
        with httpx.Client(timeout=10) as http:
            i = 0
            while not stop.is_set() and (per_client is None or i < per_client):
                cid = f"c{c}-{i}"
                # odd clients send bodies over 256 KB, which the server logs from a worker thread
                epochs = 5 if c % 2 == 0 else 2_000
                body = orjson.dumps({"client_request_id": cid, "inputs": rng.normal(size=(epochs, N_FEATURES)).tolist(),
                                     "params": {"subject_id": c}})
                try:
                    resp = http.post(url, content=body, headers={**headers, "Content-Type": "application/json"})
                    (ok if resp.status_code == 200 else failed).add(cid)
                except httpx.HTTPError:
                    failed.add(cid)  # in flight when the server died
                i += 1
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    return threads


def _rows(spark, cfg):
    return read_table(spark, cfg, "inference_log").select("client_request_id", "databricks_request_id",
                                                            "status_code", "request_metadata").collect()


def test_every_answered_request_is_logged_once_across_a_kill_9(spark, cfg):
    version = register_p300_version(cfg, n_features=N_FEATURES, alias="champion")
    info = start_local_server(cfg)
    try:
        ws = workspace_client(cfg)
        apply_served_versions(ws, cfg, {"champion": version})
        url = invocation_url(ws, cfg)
        ok: set[str] = set()
        failed: set[str] = set()
        stop = threading.Event()
        threads = _load(url, info.headers(), 4, stop, ok, failed)
        deadline = time.monotonic() + 60
        while len(ok) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(info.pid, signal.SIGKILL)  # mid-load, between flushes or during one
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert len(ok) >= 300
        wal = list((cfg.serving_dir / "inference_wal").glob("seg-*"))
        assert wal, "the kill left write-ahead segments to recover"
        start_local_server(cfg)  # recovers: commits what the killed server left
    finally:
        stop_local_server(cfg)  # a clean stop commits the rest
    rows = _rows(spark, cfg)
    ids = [r["client_request_id"] for r in rows]
    assert len(ids) == len(set(ids)), "no request is logged twice"
    assert len({r["databricks_request_id"] for r in rows}) == len(rows)
    logged = set(ids)
    assert ok <= logged, f"{len(ok - logged)} answered requests are missing from the log"
    extra = logged - ok
    # only requests in flight at the kill may be logged without their client seeing the 200
    assert extra <= failed and len(extra) <= 4
    assert {r["status_code"] for r in rows} == {200}
    assert {r["request_metadata"]["model_version"] for r in rows} == {version}
    assert not list((cfg.serving_dir / "inference_wal").glob("seg-*"))
    large = read_table(spark, cfg, "inference_log").where("length(request) > 262144").count()
    assert 0 < large < len(rows), "both the inline and the threaded append were exercised"


def test_a_commit_interrupted_before_the_segment_is_deleted_writes_no_duplicates(spark, cfg, tmp_path):
    table = cfg.table("inference_log")
    log = InferenceLog(tmp_path / "wal", table, flush_interval_s=3600).start()
    with log._commit_lock:  # the flusher's passes wait (its first may come late): this test commits
        for i in range(10):
            log.record(b'{"inputs": [[1]]}', b'{"predictions": [1]}', status_code=200, timestamp_ms=1_000 + i,
                       execution_time_ms=1, endpoint_name="e", served_entity_name="champion", model_name="m",
                       model_version="1", client_request_id=str(i))
        log._rotate()
        segment = sorted((tmp_path / "wal").glob("seg-*.wal"))[0]
        kept = segment.read_bytes()
        assert log._committer.commit_closed() == 10  # committed and put aside ...
    segment.write_bytes(kept)  # ... as if the process died between the commit and the delete
    with open(segment, "ab") as fh:  # plus a record cut short by the crash
        fh.write(kept[:40])
    log.close()
    again = InferenceLog(tmp_path / "wal", table, flush_interval_s=3600).start()
    again.close()
    rows = read_table(spark, cfg, "inference_log")
    assert rows.count() == 10 and rows.select("client_request_id").distinct().count() == 10
    assert rows.where(F.col("date") == F.lit("1970-01-01").cast("date")).count() == 10
    records, readable, size = read_segment(segment.with_suffix(".wal")) if segment.exists() else ([], 0, 0)
    assert not segment.exists() and records == []
