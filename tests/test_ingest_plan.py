"""Ingest's decision table without Spark: real Parquet footers (pyarrow), plain log rows."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.files import FileInfo
from pipeline.ingest_plan import Destinations, footer_length, inspect_file, is_input, plan_files


def parquet_bytes(n_channels: int = 3, rows: int = 200, sfreq: str | None = "128", stim=None, **extra) -> bytes:
    cols = {f"eeg_ch{i}": np.zeros(rows, np.float32) for i in range(1, n_channels + 1)}
    cols["stim"] = np.zeros(rows, np.int8) if stim is None else stim
    cols.update(extra)
    table = pa.table(cols)
    if sfreq is not None:
        table = table.replace_schema_metadata({"sfreq": sfreq})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def footer_of(data: bytes) -> bytes:
    """What ingest reads from a file: its footer and the 8-byte tail."""
    return data[-8 - footer_length(data[-8:], len(data)):]


def entry(name: str, data: bytes = b"", is_dir: bool = False) -> FileInfo:
    return FileInfo(f"file:/landing/{name}", name, len(data), 1_000, is_dir, f"/landing/{name}")


def listing(files: dict[str, bytes | Exception]):
    entries = [entry(n, d if isinstance(d, bytes) else b"x" * 100) for n, d in files.items()]
    footers = {n: footer_of(d) if isinstance(d, bytes) else d for n, d in files.items()}
    return entries, footers


def test_input_files_and_footer_errors(cfg):
    assert not is_input(entry(".hidden")) and not is_input(entry("x.parquet.tmp")) and is_input(entry("a.parquet"))
    with pytest.raises(ValueError, match="too small"):
        footer_length(b"PAR1", 4)
    with pytest.raises(ValueError, match="no PAR1 magic"):
        footer_length(b"\0" * 8, 100)
    with pytest.raises(ValueError, match="exceeds the file size"):
        footer_length((1000).to_bytes(4, "little") + b"PAR1", 100)


@pytest.mark.parametrize("data, kind", [
    (parquet_bytes(rows=0), "empty"),
    (parquet_bytes(sfreq="fast"), "bad_sfreq"),
    (parquet_bytes(sfreq="30"), "bad_sfreq"),
    (parquet_bytes(n_channels=0), "no_channels"),
    (parquet_bytes(stim=np.array(["a"] * 200)), "bad_stim"),
    (parquet_bytes(eeg_ch5=np.zeros(200, np.float32)), "bad_channels"),
    (parquet_bytes(n_channels=1, eeg_ch2=np.array(["x"] * 200)), "non_numeric"),
])
def test_footer_checks(cfg, data, kind):
    d = inspect_file(cfg, entry("subject_01_eeg_stim.parquet", data), 1, footer_of(data))
    assert (d.status, d.kind) == ("quarantined", kind)


def test_footer_facts_and_a_stable_ingest_id(cfg):
    data = parquet_bytes(stim=np.zeros(200, np.float64), note=np.zeros(200))
    d = inspect_file(cfg, entry("subject_01_eeg_stim.parquet", data), 1, footer_of(data))
    assert d.status == "pending" and d.channels == ["eeg_ch1", "eeg_ch2", "eeg_ch3"] and d.rows == 200
    assert d.sfreq == 128.0 and d.stim_float and d.reason == "ignored columns: note"
    assert inspect_file(cfg, entry("subject_01_eeg_stim.parquet", data), 1, footer_of(data)).ingest_id == d.ingest_id
    other = inspect_file(cfg, entry("subject_02_eeg_stim.parquet", data), 2, footer_of(data))
    assert other.ingest_id != d.ingest_id  # the subject is part of the id
    broken = inspect_file(cfg, entry("subject_01_eeg_stim.parquet", data), 1, OSError("disk"))
    assert (broken.kind, broken.reason) == ("unreadable", "unreadable Parquet file: disk")


def test_new_bad_name_directory_and_duplicate_in_one_batch(cfg):
    good = parquet_bytes()
    entries, footers = listing({"subject_02_eeg_stim.parquet": good, "subject_01_eeg_stim.parquet": good,
                                "subject_001_eeg_stim.parquet": good, "notes.txt": ValueError("not read")})
    entries.append(entry("subject_05_eeg_stim.parquet", is_dir=True))
    plan = plan_files(cfg, entries, footers, [], {})
    early = {d.info.name: d.kind for d in plan.early}
    assert early == {"notes.txt": "bad_name", "subject_05_eeg_stim.parquet": "unreadable"}
    assert [(d.info.name, d.status, d.kind) for d in plan.batch] == [
        ("subject_001_eeg_stim.parquet", "ingested", None),
        ("subject_01_eeg_stim.parquet", "quarantined", "duplicate"),  # subject 1 twice in this batch
        ("subject_02_eeg_stim.parquet", "ingested", None)]
    assert [d.info.name for d in plan.to_write] == ["subject_001_eeg_stim.parquet", "subject_02_eeg_stim.parquet"]


def archived(_path: str) -> bool:
    """Every logged file reached its destination."""
    return True


def _state(cfg, name: str, data: bytes, sid: int):
    d = inspect_file(cfg, entry(name, data), sid, footer_of(data))
    row = {"file": name, "subject_id": sid, "status": "ingested", "ingest_id": d.ingest_id,
           "moved_to": f"/archive/{name}"}
    return d.ingest_id, row


def test_against_raw_eeg_and_the_log(cfg):
    name, old, new = "subject_01_eeg_stim.parquet", parquet_bytes(rows=200), parquet_bytes(rows=300)
    old_id, row = _state(cfg, name, old, 1)
    raw = {1: (old_id, 128.0)}
    entries, footers = listing({name: old})
    [same] = plan_files(cfg, entries, footers, [row], raw, exists=archived).batch
    assert (same.status, same.kind) == ("quarantined", "duplicate") and "identical to" in same.reason
    [recovered] = plan_files(cfg, entries, footers, [], raw, exists=archived).batch  # written, never logged
    assert (recovered.status, recovered.kind, recovered.write) == ("ingested", "recovered", False)

    entries, footers = listing({name: new})
    [refused] = plan_files(cfg, entries, footers, [row], raw, exists=archived).batch
    assert refused.kind == "duplicate" and "use --replace" in refused.reason
    [replaced] = plan_files(cfg, entries, footers, [row], raw, replace=True, exists=archived).batch
    assert (replaced.status, replaced.write) == ("replaced", True)
    new_id = replaced.ingest_id
    [recovered] = plan_files(cfg, entries, footers, [row], {1: (new_id, 128.0)}, exists=archived).batch
    assert (recovered.status, recovered.kind) == ("replaced", "recovered")


def test_interrupted_move_and_deferred_files(cfg):
    name, data = "subject_01_eeg_stim.parquet", parquet_bytes()
    ingest_id, row = _state(cfg, name, data, 1)
    entries, footers = listing({name: data, "subject_02_eeg_stim.parquet": data, "subject_03_eeg_stim.parquet": data})
    plan = plan_files(cfg, entries, footers, [row], {1: (ingest_id, 128.0)}, max_subjects=1, exists=lambda p: False)
    assert [(d.info.name, d.status, d.dest) for d in plan.early] == [(name, "finish_move", f"/archive/{name}")]
    assert [d.subject_id for d in plan.batch] == [2] and [d.status for d in plan.deferred] == ["deferred"]
    moved = plan_files(cfg, entries, footers, [row], {1: (ingest_id, 128.0)}, exists=lambda p: True)
    assert moved.early == [] and moved.batch[0].kind == "duplicate"  # archived already: a re-delivery


def test_destinations_never_reuse_a_name():
    taken = {"/archive/a.parquet"}
    dests = Destinations(taken.__contains__)
    first = dests.pick("/archive", "a.parquet", "0123456789abcdef")
    assert first == "/archive/a.0123456789ab.parquet"
    assert dests.pick("/archive", "a.parquet", "0123456789abcdef") == "/archive/a.0123456789ab-1.parquet"
