"""A landing-zone file's bytes -> its data checks, or its raw_eeg chunk rows.

Ingest reads each subject file with Spark's ``binaryFile`` source, so the JVM moves the
whole file as one cell, through Hadoop's FileSystem (local paths and ``dbfs:/``
alike), and these functions parse it with pyarrow on the executors. Why: reading the
file with Spark's Parquet source turns it into one JVM row per sample, which then has
to be converted value by value to reach Python. That made ingest about 1 s of CPU per
12-minute subject, for data that pyarrow decodes in milliseconds.

Pure functions of bytes and plain arguments; pandas frames in and out at the Spark edge.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from udfs import raw_chunks

__all__ = ["CHECK_COLUMNS", "check_file", "check_files", "encode_file", "encode_files", "file_name"]

CHECK_COLUMNS = ["name", "rows", "bad", "events", "bad_stim", "error"]


def file_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _read(content: bytes, columns: Sequence[str]) -> pa.Table:
    return pq.read_table(pa.BufferReader(content), columns=list(columns))


def check_file(content: bytes, channels: Sequence[str], stim_column: str, event_ids: Sequence[int],
               stim_float: bool) -> dict[str, Any]:
    """Rows, NaN/inf count per channel, samples with an event code, bad stim values; or the read error."""
    try:
        table = _read(content, [*channels, stim_column])
    except Exception as exc:  # noqa: BLE001 - a footer that parses over data that does not
        text = str(exc).strip()
        return {"rows": None, "bad": None, "events": None, "bad_stim": None,
                "error": text.splitlines()[0][:300] if text else type(exc).__name__}
    bad = {}
    for c in channels:
        values = table.column(c).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        n = int((~np.isfinite(values)).sum())
        if n:
            bad[c] = n
    stim = table.column(stim_column).to_numpy(zero_copy_only=False)
    stim = stim.astype(np.float64) if stim.dtype == object else stim
    missing = pd.isna(stim)
    bad_stim = int(missing.sum()) + (int((~missing & (stim != np.floor(np.nan_to_num(stim)))).sum()) if stim_float else 0)
    return {"rows": table.num_rows, "bad": json.dumps(bad), "events": int(np.isin(stim, list(event_ids)).sum()),
            "bad_stim": bad_stim, "error": None}


def check_files(batches: Iterator[pd.DataFrame], specs: Mapping[str, Mapping[str, Any]], stim_column: str,
                event_ids: Sequence[int]) -> Iterator[pd.DataFrame]:
    """mapInPandas over binaryFile rows: one CHECK_COLUMNS row per file; ``specs`` by file name."""
    for pdf in batches:
        rows = []
        for path, content in zip(pdf["path"], pdf["content"]):
            name = file_name(path)
            spec = specs[name]
            rows.append({"name": name, **check_file(content, spec["channels"], stim_column, event_ids,
                                                     spec["stim_float"])})
        yield pd.DataFrame(rows, columns=CHECK_COLUMNS)


def encode_file(content: bytes, subject_id: int, channels: Sequence[str], all_channels: Sequence[str],
                stim_column: str, chunk: int, ingest_id: str, sfreq: float) -> pd.DataFrame:
    """One checked file -> its raw_eeg chunk rows (channels it lacks are null)."""
    table = _read(content, [*channels, stim_column])
    n = table.num_rows
    frame = pd.DataFrame({c: (table.column(c).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                              if c in channels else np.full(n, np.nan, dtype=np.float32)) for c in all_channels})
    stim = table.column(stim_column).to_numpy(zero_copy_only=False)
    frame[stim_column] = np.nan_to_num(stim.astype(np.float64, copy=False)).astype(np.int32)
    frame["subject_id"] = np.int32(subject_id)
    frame["sample_idx"] = np.arange(n, dtype=np.int64)
    rows = raw_chunks.encode(frame, all_channels, stim_column, chunk)
    rows["ingest_id"] = ingest_id
    rows["sfreq"] = float(sfreq)
    return rows


def encode_files(batches: Iterator[pd.DataFrame], specs: Mapping[str, Mapping[str, Any]],
                 all_channels: Sequence[str], stim_column: str, chunk: int) -> Iterator[pd.DataFrame]:
    """mapInPandas over binaryFile rows -> chunk rows; ``specs`` by file name."""
    for pdf in batches:
        for path, content in zip(pdf["path"], pdf["content"]):
            s = specs[file_name(path)]
            yield encode_file(content, s["subject_id"], s["channels"], all_channels, stim_column, chunk,
                              s["ingest_id"], s["sfreq"])
