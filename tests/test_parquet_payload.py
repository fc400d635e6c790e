"""The payload splice: pyarrow's small columns plus hand-written payload pages read back as the
file pyarrow would have written whole (same schema, same values, same stored Arrow schema).
Spark reads these files in tests/test_inference_log.py and tests/test_monitor.py."""
from __future__ import annotations

import io
import mmap
import struct

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.monitor_tables import arrow_schema
from pipeline.serving.parquet_payload import decode_struct, encode_struct, payload_size, splice_payload

REQUESTS = [b'{"inputs": [[1.0, 2.0]]}', None, "\u00e9 \u2713 \U0001f9e0".encode(), b"x" * 300_000, b""]
RESPONSES = [b'{"predictions": [0.1]}', b"{}", b'{"error_code": "BAD_REQUEST"}', b"[]", b"null"]


def _full_table() -> pa.Table:
    n = len(REQUESTS)
    return pa.table({
        "databricks_request_id": pa.array([f"r{i}" for i in range(n)], pa.large_string()),
        "client_request_id": pa.array([None, "c1", None, "c3", "c4"], pa.large_string()),
        "date": pa.array([20_000 + i for i in range(n)], pa.int32()).cast(pa.date32()),
        "timestamp_ms": pa.array(range(n), pa.int64()),
        "status_code": pa.array([200, 200, 400, 200, 500], pa.int32()),
        "sampling_fraction": pa.array([1.0] * n),
        "execution_time_ms": pa.array([3, 4, 5, 6, 7], pa.int64()),
        "request": pa.array([None if r is None else r.decode() for r in REQUESTS], pa.large_string()),
        "response": pa.array([r.decode() for r in RESPONSES], pa.large_string()),
        "served_entity_id": pa.array(["champion", None, "challenger", "champion", "champion"], pa.large_string()),
        "request_metadata": pa.array([[("model_version", "3")], [], None, [("k", None)], [("a", "b"), ("c", "d")]],
                                     pa.map_(pa.string(), pa.string())),
    }, schema=arrow_schema())


def _footer(data: bytes) -> bytes:
    n = struct.unpack_from("<I", data, len(data) - 8)[0]
    return data[len(data) - 8 - n:len(data) - 8]


@pytest.mark.parametrize("options", [{}, {"compression": "none", "write_statistics": False},
                                     {"use_dictionary": False, "row_group_size": 2}])
def test_the_thrift_codec_gives_back_pyarrows_footer_byte_for_byte(options):
    sink = io.BytesIO()
    pq.write_table(_full_table(), sink, **options)
    footer = _footer(sink.getvalue())
    decoded, end = decode_struct(footer)
    assert end == len(footer) and bytes(encode_struct(decoded)) == footer


def test_spliced_payload_columns_read_back_as_pyarrows_own_file(tmp_path):
    full = _full_table()
    whole = io.BytesIO()
    pq.write_table(full, whole, compression="none")
    small = full.drop(["request", "response"])
    bodies = {"request": [None if r is None else memoryview(r) for r in REQUESTS], "response": RESPONSES}
    buf = mmap.mmap(-1, 1 << 20)
    sink = pa.FixedSizeBufferWriter(pa.py_buffer(buf))
    pq.write_table(small, sink, compression="none", row_group_size=len(REQUESTS))
    n = splice_payload(buf, sink.tell(), bodies, after="execution_time_ms", arrow_schema=arrow_schema())
    assert n <= sink.tell() + sum(map(payload_size, bodies.values())) + 4096
    path = tmp_path / "spliced.parquet"
    path.write_bytes(buf[:n])

    back = pq.read_table(path)
    assert back.schema == full.schema and back.equals(full)
    assert pq.read_metadata(path).metadata[b"ARROW:schema"] == \
        pq.read_metadata(io.BytesIO(whole.getvalue())).metadata[b"ARROW:schema"]
    meta = pq.read_metadata(path)
    assert meta.num_rows == len(REQUESTS) and meta.num_row_groups == 1
    assert [meta.schema.column(i).name for i in range(meta.num_columns)][7:9] == ["request", "response"]


def test_a_file_of_several_row_groups_is_refused():
    buf = mmap.mmap(-1, 1 << 20)
    sink = pa.FixedSizeBufferWriter(pa.py_buffer(buf))
    pq.write_table(_full_table().drop(["request", "response"]), sink, row_group_size=2)
    with pytest.raises(ValueError, match="one row group"):
        splice_payload(buf, sink.tell(), {"request": REQUESTS, "response": RESPONSES}, after="execution_time_ms",
                       arrow_schema=arrow_schema())
