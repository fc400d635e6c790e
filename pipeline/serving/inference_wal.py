"""The inference log's write-ahead segment format, shared by the server that appends and the
committer that reads.

A segment is a run of frames: header (magic, len(meta), len(request), len(response)), the
meta JSON, the request and response bytes as the server received and sent them, and the
frame's total length again, so that a frame cut short by a crash cannot end well. Segments
are ``seg-<number>.open`` while the server appends and ``seg-<number>.wal`` once closed."""
from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson  # pinned (requirements.txt); the server parses with it too

WAL_DIR = "inference_wal"
MAGIC = b"P3WL"
HEAD = struct.Struct("<4sIII")  # magic, len(meta), len(request), len(response)
TAIL = struct.Struct("<I")      # total frame length again: a torn frame cannot end well
SEG_PREFIX, SEG_SUFFIX, OPEN_SUFFIX = "seg-", ".wal", ".open"  # .open: being written


def new_request_id() -> str:
    return str(uuid.uuid4())


def segment_name(number: int, open_: bool = False) -> str:
    return f"{SEG_PREFIX}{number:012d}{OPEN_SUFFIX if open_ else SEG_SUFFIX}"


def segment_number(path: Path) -> int | None:
    name = path.name
    for suffix in (SEG_SUFFIX, OPEN_SUFFIX):
        if name.startswith(SEG_PREFIX) and name.endswith(suffix):
            digits = name[len(SEG_PREFIX):-len(suffix)]
            return int(digits) if digits.isdigit() else None
    return None


def frame(meta: bytes, request: bytes, response: bytes) -> list[bytes]:
    """One record's frame as parts for a single ``writev``."""
    total = HEAD.size + len(meta) + len(request) + len(response) + TAIL.size
    return [HEAD.pack(MAGIC, len(meta), len(request), len(response)), meta, request, response, TAIL.pack(total)]


@dataclass(frozen=True)
class Frames:
    """A segment's readable frames: each record's meta and the byte spans of its bodies."""

    metas: list[dict[str, Any]]
    requests: list[tuple[int, int]]   # (start, end) offsets into the segment
    responses: list[tuple[int, int]]
    readable: int                     # bytes up to the first torn or foreign frame


def scan(data: Any) -> Frames:
    """Frames of a segment's bytes (bytes, memoryview or mmap), without copying the bodies."""
    metas, requests, responses, pos = [], [], [], 0
    size = len(data)
    while pos + HEAD.size <= size:
        magic, lm, lq, lr = HEAD.unpack_from(data, pos)
        end = pos + HEAD.size + lm + lq + lr + TAIL.size
        if magic != MAGIC or end > size or TAIL.unpack_from(data, end - TAIL.size)[0] != end - pos:
            break
        a = pos + HEAD.size
        metas.append(orjson.loads(data[a:a + lm]))
        requests.append((a + lm, a + lm + lq))
        responses.append((a + lm + lq, end - TAIL.size))
        pos = end
    return Frames(metas, requests, responses, pos)


@dataclass(frozen=True)
class LoggedRequest:
    """One answered invocation, as read back from a segment."""

    meta: dict[str, Any]
    request: bytes
    response: bytes


def read_segment(path: Path) -> tuple[list[LoggedRequest], int, int]:
    """(records, bytes readable, file size): records up to the first torn or foreign frame."""
    data = path.read_bytes()
    f = scan(data)
    records = [LoggedRequest(m, data[a:b], data[c:d]) for m, (a, b), (c, d) in zip(f.metas, f.requests, f.responses)]
    return records, f.readable, len(data)
