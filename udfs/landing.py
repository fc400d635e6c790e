"""A landing-zone file -> its data checks, or its raw_eeg chunk rows.

Ingest hands each subject file to these functions through Spark's ``binaryFile`` source,
one row per file, and they parse it with pyarrow on the executors. Why: reading the
file with Spark's Parquet source turns it into one JVM row per sample, which then has
to be converted value by value to reach Python. That made ingest about 1 s of CPU per
12-minute subject, for data that pyarrow decodes in milliseconds.

A file arrives in one of two ways (``source``):
- on the local file system, as its path (the row has no ``content``): pyarrow opens it
  here, and the JVM never holds it. A 592 MB file failed with a 4 GB heap otherwise;
- elsewhere (``dbfs:/``, object stores), as the ``content`` bytes the JVM read through
  Hadoop's FileSystem.

Functions of a file and plain arguments; pandas frames in and out at the Spark edge.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from udfs import raw_chunks

__all__ = ["CHECK_COLUMNS", "check_file", "check_files", "encode_file", "encode_files",
           "file_name", "sources"]

CHECK_COLUMNS = ["name", "rows", "bad", "events", "bad_stim", "error"]

Source = bytes | str  # the file's bytes, or its local path


def file_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _read(source: Source, columns: Sequence[str]) -> pa.Table:
    return pq.read_table(source if isinstance(source, str) else pa.BufferReader(source), columns=list(columns))


def sources(pdf: pd.DataFrame, specs: Mapping[str, Mapping[str, Any]]) -> Iterator[tuple[str, Source]]:
    """(file name, source) per binaryFile row: its ``content`` when the row has it, else the
    ``local_path`` of its spec."""
    contents = pdf["content"] if "content" in pdf.columns else [None] * len(pdf)
    for path, content in zip(pdf["path"], contents):
        name = file_name(path)
        yield name, (content if content is not None else specs[name]["local_path"])


def check_file(source: Source, channels: Sequence[str], stim_column: str, event_ids: Sequence[int],
               stim_float: bool) -> dict[str, Any]:
    """Rows, NaN/inf count per channel, samples with an event code, bad stim values; or the read error."""
    try:
        table = _read(source, [*channels, stim_column])
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
        for name, source in sources(pdf, specs):
            spec = specs[name]
            rows.append({"name": name, **check_file(source, spec["channels"], stim_column, event_ids,
                                                     spec["stim_float"])})
        yield pd.DataFrame(rows, columns=CHECK_COLUMNS)


def encode_file(source: Source, subject_id: int, channels: Sequence[str], all_channels: Sequence[str],
                stim_column: str, chunk: int, ingest_id: str, sfreq: float) -> pd.DataFrame:
    """One checked file -> its raw_eeg chunk rows (channels it lacks are null)."""
    table = _read(source, [*channels, stim_column])
    n = table.num_rows
    frame = pd.DataFrame({c: (table.column(c).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                              if c in channels else np.full(n, np.nan, dtype=np.float32)) for c in all_channels},
                         copy=False)  # no consolidation into one 2D block: encode reads it column by column
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
    """mapInPandas over binaryFile rows -> chunk rows, raw_chunks.BATCH_BYTES at most per frame;
    ``specs`` by file name."""
    step = raw_chunks.rows_per_batch(chunk, len(all_channels))
    for pdf in batches:
        for name, source in sources(pdf, specs):
            s = specs[name]
            rows = encode_file(source, s["subject_id"], s["channels"], all_channels, stim_column, chunk,
                               s["ingest_id"], s["sfreq"])
            for start in range(0, len(rows), step):
                yield rows.iloc[start:start + step]
