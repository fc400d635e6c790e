"""Parquet files whose large text columns are copied once, straight from the write-ahead segment.

pyarrow writes the inference log's small columns; this module appends the payload columns
(``request``, ``response``) as plain BYTE_ARRAY pages and splices them into pyarrow's footer.
pyarrow's own writer moved each body through its page builder and sink, four to five copies
plus fresh zeroed pages per file: 1.1 ms of CPU per 2.3 MB request against 0.2 ms for one
copy (docs/performance.md), and the committer shares the server's cores.

The footer is Thrift's compact protocol, decoded into field-id-keyed structs and encoded back
byte for byte (a test checks that on pyarrow's own footers), so every field pyarrow wrote is
kept. Each payload value is one data page (v1, uncompressed, PLAIN, RLE definition levels):
readers of any kind accept it, and a page never nears Parquet's 2 GiB page limit.
"""
from __future__ import annotations

import base64
import struct
from typing import Any, Callable, Sequence

__all__ = ["decode_struct", "encode_struct", "splice_payload", "payload_size"]

# Thrift compact protocol type codes
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)

# Parquet enum values (parquet.thrift)
_BYTE_ARRAY, _OPTIONAL, _UTF8, _PLAIN, _RLE, _UNCOMPRESSED, _DATA_PAGE = 6, 1, 0, 0, 3, 0, 0

# FileMetaData, SchemaElement, RowGroup, ColumnChunk, ColumnMetaData field ids (parquet.thrift)
_FM_SCHEMA, _FM_ROW_GROUPS, _FM_KV, _FM_COLUMN_ORDERS = 2, 4, 5, 7
_SE_NAME, _SE_CHILDREN = 4, 5
_RG_COLUMNS, _RG_BYTES, _RG_COMPRESSED = 1, 2, 6
_ARROW_SCHEMA = b"ARROW:schema"


# ---- Thrift compact protocol ------------------------------------------------------------------
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _put_varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _unzig(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _zig(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _read_value(buf: bytes, i: int, t: int) -> tuple[Any, int]:
    if t in (_TRUE, _FALSE):  # inside a list: one byte
        return buf[i] == _TRUE, i + 1
    if t == _BYTE:
        return struct.unpack_from("b", buf, i)[0], i + 1
    if t in (_I16, _I32, _I64):
        n, i = _varint(buf, i)
        return _unzig(n), i
    if t == _DOUBLE:
        return struct.unpack_from("<d", buf, i)[0], i + 8
    if t == _BINARY:
        n, i = _varint(buf, i)
        return bytes(buf[i:i + n]), i + n
    if t in (_LIST, _SET):
        head = buf[i]
        i += 1
        size, et = head >> 4, head & 0x0F
        if size == 15:
            size, i = _varint(buf, i)
        items = []
        for _ in range(size):
            v, i = _read_value(buf, i, et)
            items.append(v)
        return (et, items), i
    if t == _STRUCT:
        return decode_struct(buf, i)
    raise ValueError(f"Thrift compact type {t} is not used in Parquet footers")


def decode_struct(buf: bytes, i: int = 0) -> tuple[dict[int, tuple[int, Any]], int]:
    """A compact-protocol struct at ``i`` as {field id: (type, value)}, and the end offset."""
    fields: dict[int, tuple[int, Any]] = {}
    last = 0
    while True:
        head = buf[i]
        i += 1
        if head == 0:
            return fields, i
        t, delta = head & 0x0F, head >> 4
        if delta:
            fid = last + delta
        else:
            n, i = _varint(buf, i)
            fid = _unzig(n)
        if t in (_TRUE, _FALSE):
            fields[fid] = (t, t == _TRUE)
        else:
            fields[fid] = (t, None)
            value, i = _read_value(buf, i, t)
            fields[fid] = (t, value)
        last = fid


def _write_value(out: bytearray, t: int, v: Any) -> None:
    if t in (_TRUE, _FALSE):
        out.append(_TRUE if v else _FALSE)
    elif t == _BYTE:
        out += struct.pack("b", v)
    elif t in (_I16, _I32, _I64):
        _put_varint(out, _zig(v))
    elif t == _DOUBLE:
        out += struct.pack("<d", v)
    elif t == _BINARY:
        _put_varint(out, len(v))
        out += v
    elif t in (_LIST, _SET):
        et, items = v
        if len(items) < 15:
            out.append(len(items) << 4 | et)
        else:
            out.append(0xF0 | et)
            _put_varint(out, len(items))
        for item in items:
            _write_value(out, et, item)
    elif t == _STRUCT:
        encode_struct(v, out)
    else:
        raise ValueError(f"Thrift compact type {t} is not used in Parquet footers")


def encode_struct(fields: dict[int, tuple[int, Any]], out: bytearray | None = None) -> bytearray:
    """The inverse of :func:`decode_struct` (fields in id order, as Thrift writes them)."""
    out = bytearray() if out is None else out
    last = 0
    for fid in sorted(fields):
        t, v = fields[fid]
        wire = (_TRUE if v else _FALSE) if t in (_TRUE, _FALSE) else t
        if 0 < fid - last <= 15:
            out.append((fid - last) << 4 | wire)
        else:
            out.append(wire)
            _put_varint(out, _zig(fid))
        if t not in (_TRUE, _FALSE):
            _write_value(out, t, v)
        last = fid
    out.append(0)
    return out


# ---- the payload columns ------------------------------------------------------------------------
_PRESENT = struct.pack("<I", 2) + b"\x02\x01"  # definition levels: one RLE run of one value, 1
_NULL = struct.pack("<I", 2) + b"\x02\x00"


def _page_header(body_size: int, present: bool) -> bytes:
    data_page = {1: (_I32, 1), 2: (_I32, _PLAIN), 3: (_I32, _RLE), 4: (_I32, _RLE)}
    size = len(_PRESENT) + (4 + body_size if present else 0)
    return bytes(encode_struct({1: (_I32, _DATA_PAGE), 2: (_I32, size), 3: (_I32, size), 5: (_STRUCT, data_page)}))


def payload_size(values: Sequence[Any]) -> int:
    """An upper bound of the bytes :func:`splice_payload` adds for one payload column."""
    return sum(64 + (len(v) if v is not None else 0) for v in values)


def splice_payload(buf: Any, small_size: int, columns: dict[str, Sequence[Any]], after: str,
                   arrow_schema: Any, copy: Callable[[int, Any], None] | None = None) -> int:
    """Add ``columns`` (name -> one bytes-like value or None per row, in schema order) to the
    Parquet file pyarrow wrote into ``buf[:small_size]`` (one row group), right after column
    ``after``; returns the new file's size. Values are copied into ``buf`` once."""
    footer_len = struct.unpack_from("<I", buf, small_size - 8)[0]
    footer_start = small_size - 8 - footer_len
    meta, _ = decode_struct(bytes(buf[footer_start:small_size - 8]))
    row_groups = meta[_FM_ROW_GROUPS][1][1]
    if len(row_groups) != 1:
        raise ValueError(f"expected one row group, pyarrow wrote {len(row_groups)}")
    rg = row_groups[0]
    pos = footer_start
    chunks, elements = [], []
    for name, values in columns.items():
        start = pos
        for v in values:
            header = _page_header(len(v) if v is not None else 0, v is not None)
            buf[pos:pos + len(header)] = header
            pos += len(header)
            if v is None:
                buf[pos:pos + len(_NULL)] = _NULL
                pos += len(_NULL)
                continue
            buf[pos:pos + len(_PRESENT)] = _PRESENT
            struct.pack_into("<I", buf, pos + len(_PRESENT), len(v))
            pos += len(_PRESENT) + 4
            buf[pos:pos + len(v)] = v
            pos += len(v)
        size = pos - start
        column_meta = {1: (_I32, _BYTE_ARRAY), 2: (_LIST, (_I32, [_PLAIN, _RLE])), 3: (_LIST, (_BINARY, [name.encode()])),
                       4: (_I32, _UNCOMPRESSED), 5: (_I64, len(values)), 6: (_I64, size), 7: (_I64, size),
                       9: (_I64, start)}
        chunks.append({2: (_I64, start), 3: (_STRUCT, column_meta)})
        elements.append({1: (_I32, _BYTE_ARRAY), 3: (_I32, _OPTIONAL), 4: (_BINARY, name.encode()),
                         6: (_I32, _UTF8), 10: (_STRUCT, {1: (_STRUCT, {})})})
        for key in (_RG_BYTES, _RG_COMPRESSED):
            if key in rg:
                rg[key] = (_I64, rg[key][1] + size)
    # schema: the root, then the top-level fields depth first; payload elements go after `after`
    schema = meta[_FM_SCHEMA][1][1]
    at = next(i for i, e in enumerate(schema) if e[_SE_NAME][1] == after.encode()) + 1
    if _SE_CHILDREN in schema[at - 1]:
        raise ValueError(f"{after} is a group; payload columns go after a leaf column")
    leaf = sum(1 for e in schema[1:at] if _SE_CHILDREN not in e)  # the column chunks' index
    schema[at:at] = elements
    schema[0][_SE_CHILDREN] = (_I32, schema[0][_SE_CHILDREN][1] + len(elements))
    cols = rg[_RG_COLUMNS][1][1]
    cols[leaf:leaf] = chunks
    if _FM_COLUMN_ORDERS in meta:
        orders = meta[_FM_COLUMN_ORDERS][1][1]
        orders[leaf:leaf] = [orders[0]] * len(chunks)
    if _FM_KV in meta:  # the Arrow schema pyarrow stored describes the small columns only
        kvs = meta[_FM_KV][1][1]
        meta[_FM_KV] = (_LIST, (_STRUCT, [kv for kv in kvs if kv[1][1] != _ARROW_SCHEMA] + [
            {1: (_BINARY, _ARROW_SCHEMA), 2: (_BINARY, base64.b64encode(arrow_schema.serialize().to_pybytes()))}]))
    footer = encode_struct(meta)
    buf[pos:pos + len(footer)] = footer
    pos += len(footer)
    struct.pack_into("<I", buf, pos, len(footer))
    buf[pos + 4:pos + 8] = b"PAR1"
    return pos + 8
