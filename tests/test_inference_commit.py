"""The inference log's committer: one segment into one Parquet file and one Delta commit.

No server and no Spark: the server's own writer appends, the committer commits, deltalake
reads the table back (tests/test_inference_log.py reads it with delta-spark)."""
from __future__ import annotations

import json
import os
import time

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from pipeline.serving.inference_commit import APP_ID, SegmentCommitter
from pipeline.serving.inference_log import InferenceLog
from pipeline.serving.inference_wal import read_segment


def _record(log: InferenceLog, request: bytes, status: int = 200, cid: str | None = None) -> str:
    return log.record(request, b'{"predictions": [0.25]}', status_code=status, timestamp_ms=int(time.time() * 1000),
                      execution_time_ms=4, endpoint_name="p300", served_entity_name="champion", model_name="m",
                      model_version="3", client_request_id=cid)


@pytest.mark.parametrize("fsync", ["none", "flush"])
def test_a_segment_commits_every_record_with_its_bodies_nulls_and_statistics(tmp_path, fsync):
    log = InferenceLog(tmp_path / "wal", str(tmp_path / "table"), 3600, 64, fsync, committer="thread",
                       max_payload_kb=1).start()
    big = json.dumps({"inputs": [[0.5] * 400]}).encode()  # over 1 KB: logged as null
    ids = [_record(log, b'{"inputs": [[1.0, 2.0]]}', cid="a"), _record(log, big, cid="b"),
           _record(log, b"\xff\xfe not json", status=400, cid="c")]
    assert log.flush() == 3
    log.close()

    dt = DeltaTable(str(tmp_path / "table"))
    rows = {r["client_request_id"]: r for r in dt.to_pyarrow_table().to_pylist()}
    assert [rows[c]["databricks_request_id"] for c in "abc"] == ids
    assert rows["a"]["request"] == '{"inputs": [[1.0, 2.0]]}' and rows["a"]["response"] == '{"predictions": [0.25]}'
    assert rows["b"]["request"] is None and rows["b"]["response"] is not None  # the row stays
    assert rows["c"]["request"] == "\ufffd\ufffd not json" and rows["c"]["status_code"] == 400
    assert dict(rows["a"]["request_metadata"])["model_version"] == "3"
    assert dt.transaction_version(APP_ID) == 1
    adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    assert len(adds) == 1 and adds[0]["num_records"] == 3
    assert adds[0]["min.status_code"] == 200 and adds[0]["max.status_code"] == 400
    assert adds[0]["null_count.client_request_id"] == 0
    assert not list((tmp_path / "wal").glob("seg-*.wal"))


def test_a_torn_tail_is_kept_and_a_committed_segment_is_not_committed_again(tmp_path):
    wal, table = tmp_path / "wal", str(tmp_path / "table")
    log = InferenceLog(wal, table, 3600, 64, "none", committer="process").start()
    log._child.terminate()  # commit by hand below, not in the background
    log._child.wait()
    _record(log, b'{"inputs": [[1.0]]}')
    _record(log, b'{"inputs": [[2.0]]}')
    log._rotate()
    segment = next(wal.glob("seg-*.wal"))
    keep = segment.read_bytes()
    with open(segment, "ab") as f:
        f.write(keep[:40])  # a frame cut short by a crash
    records, _, torn = read_segment(segment)
    assert torn == 40 and [r.request for r in records] == [b'{"inputs": [[1.0]]}', b'{"inputs": [[2.0]]}']

    assert SegmentCommitter(wal, table, print).commit_closed() == 2
    assert segment.with_suffix(".torn").read_bytes() == keep[:40]
    segment.write_bytes(keep)  # as if the committer died between its commit and the delete
    assert SegmentCommitter(wal, table, print).commit_closed() == 0
    assert DeltaTable(table).to_pyarrow_table().num_rows == 2


def test_a_recycled_segment_file_is_written_over_and_its_older_frames_are_not_read(tmp_path):
    wal, table = tmp_path / "wal", str(tmp_path / "table")
    log = InferenceLog(wal, table, 3600, 64, "none", committer="thread").start()
    for i in range(5):  # a long first segment ...
        _record(log, json.dumps({"inputs": [[float(i)] * 50]}).encode(), cid=f"old{i}")
    assert log.flush() == 5
    free = list(wal.glob("free-*"))
    assert len(free) == 1  # ... whose file is kept for reuse
    long_size = free[0].stat().st_size
    _record(log, b'{"inputs": [[8.0]]}', cid="mid")  # into the segment opened at the flush (a new file)
    assert log.flush() == 1  # the next one is opened in the kept file
    _record(log, b'{"inputs": [[9.0]]}', cid="new")
    log._rotate()
    segment = next(wal.glob("seg-*.wal"))
    assert segment.stat().st_size == long_size  # written over in place, the older frames after it
    records, _, torn = read_segment(segment)
    assert [r.meta["client_request_id"] for r in records] == ["new"] and torn == 0
    assert log.flush() == 1
    log.close()
    assert sorted(DeltaTable(table).to_pyarrow_table().column("client_request_id").to_pylist()) == \
        ["mid", "new", "old0", "old1", "old2", "old3", "old4"]
    assert not list(wal.glob("seg-*.torn"))


def test_a_file_system_that_refuses_o_direct_gets_a_buffered_write(tmp_path, monkeypatch):
    real_open, refused = os.open, []

    def no_direct(path, flags, *args):  # as tmpfs on older kernels, and some network file systems
        if flags & os.O_DIRECT:
            refused.append(path)
            raise OSError(22, "Invalid argument", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    table = str(tmp_path / "table")
    log = InferenceLog(tmp_path / "wal", table, 3600, 64, "flush", committer="thread").start()
    _record(log, b'{"inputs": [[1.0, 2.0]]}', cid="a")
    assert log.flush() == 1
    log.close()
    assert refused and DeltaTable(table).to_pyarrow_table().column("request").to_pylist() == \
        ['{"inputs": [[1.0, 2.0]]}']


def test_a_commit_that_dies_between_its_parquet_file_and_the_delta_commit_converges(tmp_path, monkeypatch):
    """A crash after the Parquet file is written, before Delta references it: the segment stays,
    the next committer writes it again, and the table holds each row once (the first file is
    never referenced, so readers do not see it; VACUUM removes it)."""
    from deltalake import DeltaTable as RealTable

    wal, table = tmp_path / "wal", str(tmp_path / "table")
    log = InferenceLog(wal, table, 3600, 64, "none", committer="thread").start()
    _record(log, b'{"inputs": [[1.0]]}', cid="a")
    assert log.flush() == 1  # the table exists; the next commit is an append
    _record(log, b'{"inputs": [[2.0]]}', cid="b")
    _record(log, b'{"inputs": [[3.0]]}', cid="c")
    log._rotate()

    def dies(*_args, **_kwargs):
        raise SystemExit("killed between the Parquet file and the commit")

    with monkeypatch.context() as m:
        m.setattr(RealTable, "create_write_transaction", dies)
        with pytest.raises(SystemExit):
            SegmentCommitter(wal, table, print).commit_closed()
    assert len(list(wal.glob("seg-*.wal"))) == 1  # the segment waits for the next committer
    files = set(os.listdir(table))
    assert SegmentCommitter(wal, table, print).commit_closed() == 2
    log.close()
    rows = RealTable(table).to_pyarrow_table().column("client_request_id").to_pylist()
    assert sorted(rows) == ["a", "b", "c"]
    referenced = {os.path.basename(u) for u in RealTable(table).file_uris()}
    assert len({f for f in files if f.endswith(".parquet")} - referenced) == 1  # the dead commit's file
