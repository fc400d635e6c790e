"""Ingest's decision table, pure: what happens to each landing-zone file.

A function of the listing, the files' Parquet footers, what ingest_log and raw_eeg already
hold and the run's options (``--replace``, ``--max-subjects``); no Spark, so every case is
tested without a session (tests/test_ingest_plan.py). Per file the answer is one of:
ingest, replace, quarantine (a bad kind of the raw input contract, or a duplicate),
recover (its data is already in raw_eeg from an interrupted run), finish an interrupted
move, or defer to a later run. ``pipeline/ingest.py`` does the I/O around it.
"""
from __future__ import annotations

import hashlib
import io
import re
import struct
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import Config
from pipeline.files import FileInfo
from pipeline.tables.schemas import OK_STATUSES
from udfs.preprocess import channel_columns

__all__ = ["NAME_RE", "MAX_FILE_BYTES", "FileDecision", "IngestPlan", "parse_subject_id", "is_input",
           "footer_length", "inspect_file", "plan_files", "Destinations"]

NAME_RE = re.compile(r"^subject_(\d{2,})_eeg_stim\.parquet$")
# Spark's binaryFile source holds a file in one byte array: Java arrays stop just short of 2 GiB
MAX_FILE_BYTES = (1 << 31) - (1 << 20)


@dataclass
class FileDecision:
    """What happens to one landing-zone file; becomes its ingest_log row."""

    info: FileInfo
    ingest_id: str
    subject_id: int | None = None
    status: str = "pending"   # ingested | replaced | quarantined | finish_move | deferred
    kind: str | None = None
    reason: str | None = None
    rows: int | None = None
    channels: list[str] = field(default_factory=list)
    stim_float: bool = False
    sfreq: float | None = None
    dest: str | None = None
    write: bool = False       # goes into this run's raw_eeg commit
    raw_version: int | None = None

    def reject(self, kind: str, reason: str) -> "FileDecision":
        self.status, self.kind, self.reason, self.write = "quarantined", kind, reason, False
        return self

    def log_row(self, run_id: str, when: datetime) -> tuple:
        return (self.info.name, self.subject_id, self.status, self.kind, self.reason, self.rows,
                len(self.channels) or None, self.sfreq, self.info.size, self.ingest_id, self.dest,
                self.raw_version, run_id, when)


@dataclass
class IngestPlan:
    """``early``: decided from the listing alone (finish a move, bad names, directories);
    ``batch``: this run's named files in subject order; ``deferred``: left for later runs."""

    early: list[FileDecision]
    batch: list[FileDecision]
    deferred: list[FileDecision]

    @property
    def to_write(self) -> list[FileDecision]:
        return [d for d in self.batch if d.write]


def parse_subject_id(name: str) -> int | None:
    m = NAME_RE.match(name)
    return int(m.group(1)) if m else None


def is_input(info: FileInfo) -> bool:
    """Hidden, temporary or checksum files (e.g. a file still being written) are not input."""
    return not (info.name.startswith((".", "_")) or info.name.endswith((".tmp", ".crc", ".inprogress")))


def footer_length(tail: bytes, size: int) -> int:
    """The footer's length from a Parquet file's last 8 bytes; ValueError when it is not one."""
    if size < 12:
        raise ValueError(f"{size} bytes is too small for a Parquet file")
    if tail[4:] != b"PAR1":
        raise ValueError("not a Parquet file (no PAR1 magic at the end)")
    length = struct.unpack("<I", tail[:4])[0]
    if length + 12 > size:
        raise ValueError(f"footer length {length} exceeds the file size {size}")
    return length


def _fallback_id(info: FileInfo) -> str:
    return hashlib.sha256(f"{info.name}|{info.size}|{info.mtime_ms}".encode()).hexdigest()[:24]


def inspect_file(cfg: Config, info: FileInfo, sid: int, footer: bytes | Exception) -> FileDecision:
    """Footer-level checks of the raw input contract (the data checks come later, in Spark).

    ``footer``: the file's footer followed by its 8-byte tail, or why it could not be read.
    The ingest id hashes the subject, the size and the footer."""
    try:
        if isinstance(footer, Exception):
            raise footer
        meta = pq.read_metadata(io.BytesIO(b"PAR1" + footer))
        schema = meta.schema.to_arrow_schema()
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is unreadable
        return FileDecision(info, _fallback_id(info), sid).reject("unreadable", f"unreadable Parquet file: {exc}")
    d = FileDecision(info, hashlib.sha256(f"{sid}|{info.size}|".encode() + footer[:-8]).hexdigest()[:24], sid)
    d.rows = int(meta.num_rows)
    sig = cfg.signal
    names = list(schema.names)
    chans = channel_columns(names, sig.channel_prefix)
    if d.rows == 0:
        return d.reject("empty", "the file has no rows")
    if info.local_path is None and info.size > MAX_FILE_BYTES:
        return d.reject("too_large", f"{info.size:,} bytes: ingest reads a file that is not on the local file "
                                     f"system as one binary cell of at most {MAX_FILE_BYTES:,} bytes (Java's array "
                                     "limit); float32 channels and Parquet compression make it smaller")
    if sig.stim_column not in names:
        return d.reject("no_stim", f"no {sig.stim_column!r} column (columns: {', '.join(names[:8])})")
    if not chans:
        return d.reject("no_channels", f"no {sig.channel_prefix}* columns (columns: {', '.join(names[:8])})")
    expected = [f"{sig.channel_prefix}{i}" for i in range(1, len(chans) + 1)]
    if chans != expected:
        missing = sorted(set(expected) - set(chans), key=lambda c: int(c[len(sig.channel_prefix):]))
        return d.reject("bad_channels", f"channels must be {expected[0]}..{expected[-1]} without gaps; "
                                        f"missing {', '.join(missing[:5])}")
    if len(set(names)) != len(names):
        return d.reject("bad_channels", "duplicate column names")
    non_numeric = [f"{c} ({schema.field(c).type})" for c in chans
                   if not (pa.types.is_floating(schema.field(c).type) or pa.types.is_integer(schema.field(c).type))]
    if non_numeric:
        return d.reject("non_numeric", f"non-numeric channels: {', '.join(non_numeric[:5])}")
    stim_type = schema.field(sig.stim_column).type
    if not (pa.types.is_integer(stim_type) or pa.types.is_floating(stim_type)):
        return d.reject("bad_stim", f"{sig.stim_column} must be integer event codes, got {stim_type}")
    d.stim_float = pa.types.is_floating(stim_type)
    d.channels = chans
    raw_meta = (meta.metadata or {}).get(b"sfreq")
    if raw_meta is None:
        d.sfreq = float(sig.sfreq)
    else:
        try:
            d.sfreq = float(raw_meta.decode())
        except (ValueError, UnicodeDecodeError):
            return d.reject("bad_sfreq", f"Parquet metadata sfreq={raw_meta!r} is not a number")
    if not d.sfreq > 2 * cfg.preprocess.h_freq:
        return d.reject("bad_sfreq", f"sampling rate {d.sfreq:g} Hz is too low for the {cfg.preprocess.h_freq:g} Hz "
                                     f"low-pass (needs more than {2 * cfg.preprocess.h_freq:g} Hz)")
    extra = [n for n in names if n not in chans and n != sig.stim_column]
    if extra:
        d.reason = f"ignored columns: {', '.join(extra[:8])}"
    return d


def _decide_listed(cfg: Config, entries: Sequence[FileInfo], footers: Mapping[str, bytes | Exception],
                   latest: Mapping[str, dict[str, Any]], exists: Callable[[str], bool]
                   ) -> tuple[list[FileDecision], list[FileDecision]]:
    """(decided from the listing alone, named files still to decide)."""
    early, named = [], []
    for e in entries:
        sid = parse_subject_id(e.name)
        inspectable = sid is not None and not e.is_dir
        d = inspect_file(cfg, e, sid, footers[e.name]) if inspectable else FileDecision(e, _fallback_id(e), sid)
        logged = latest.get(d.ingest_id)
        if logged and logged["moved_to"] and logged["file"] == e.name and not exists(logged["moved_to"]):
            # its log row exists but its move did not happen (an interrupted run)
            d.status, d.dest, d.kind = "finish_move", logged["moved_to"], logged["status"]
            early.append(d)
        elif e.is_dir:
            early.append(d.reject("unreadable", "a directory, not a Parquet file"))
        elif sid is None:
            early.append(d.reject("bad_name", "file name must look like subject_XX_eeg_stim.parquet "
                                              "(XX: the subject number, two or more digits)"))
        else:
            named.append(d)
    return early, named


def _decide_against_state(batch: list[FileDecision], ok_rows: Sequence[dict[str, Any]],
                          raw_state: Mapping[int, tuple[str, float]], replace: bool) -> None:
    """New, duplicate, replacement or recovered, against raw_eeg and the log's ok rows."""
    ok_by_subject = {row["subject_id"]: row for row in ok_rows}
    ok_ids = {row["ingest_id"]: row for row in ok_rows}
    seen: dict[int, str] = {}
    for d in batch:
        if d.status == "quarantined":
            continue
        sid = d.subject_id
        if sid in seen:
            d.reject("duplicate", f"subject {sid} delivered twice in this batch (also {seen[sid]})")
            continue
        seen[sid] = d.info.name
        if sid not in raw_state:
            d.status, d.write = "ingested", True
            continue
        raw_id = raw_state[sid][0]
        previous = ok_by_subject.get(sid)
        if raw_id == d.ingest_id:
            if d.ingest_id in ok_ids:
                d.reject("duplicate", f"identical to {ok_ids[d.ingest_id]['file']} already ingested "
                                      f"for subject {sid}")
            else:  # written by a run that stopped before logging it
                d.status = "replaced" if previous and previous["ingest_id"] != raw_id else "ingested"
                d.kind, d.reason = "recovered", "raw data already written by an interrupted run"
        elif replace:
            d.status, d.write = "replaced", True
        else:
            since = f" from {previous['file']}" if previous else ""
            d.reject("duplicate", f"subject {sid} was already ingested{since}; use --replace to replace its raw data")


def plan_files(cfg: Config, entries: Sequence[FileInfo], footers: Mapping[str, bytes | Exception],
               log: Sequence[dict[str, Any]], raw_state: Mapping[int, tuple[str, float]], *,
               replace: bool = False, max_subjects: int | None = None,
               exists: Callable[[str], bool] = lambda _path: False) -> IngestPlan:
    """The decision table. ``entries``: the landing zone's input files; ``footers``: per named
    file its footer and tail (or the error reading it); ``log``: ingest_log rows oldest first
    (file, subject_id, status, ingest_id, moved_to); ``raw_state``: subject -> (ingest id,
    rate) in raw_eeg; ``exists``: whether a path exists (a logged destination)."""
    latest = {row["ingest_id"]: row for row in log}
    early, named = _decide_listed(cfg, entries, footers, latest, exists)
    named.sort(key=lambda d: (d.subject_id, d.info.name))
    deferred = named[max_subjects:] if max_subjects is not None else []
    for d in deferred:
        d.status = "deferred"
    batch = named[:len(named) - len(deferred)]
    _decide_against_state(batch, [r for r in log if r["status"] in OK_STATUSES], raw_state, replace)
    return IngestPlan(early, batch, deferred)


class Destinations:
    """Free names under archive/ and quarantine/, never overwriting an earlier file."""

    def __init__(self, exists: Callable[[str], bool]) -> None:
        self.exists = exists
        self.taken: set[str] = set()

    def pick(self, directory: str, name: str, ingest_id: str) -> str:
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        candidates = [f"{directory}/{name}", f"{directory}/{stem}.{ingest_id[:12]}{dot}{ext}"]
        candidates += [f"{directory}/{stem}.{ingest_id[:12]}-{k}{dot}{ext}" for k in range(1, 1000)]
        for path in candidates:
            if path not in self.taken and not self.exists(path):
                self.taken.add(path)
                return path
        raise RuntimeError(f"no free name for {name} under {directory}")
