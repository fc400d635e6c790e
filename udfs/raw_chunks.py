"""raw_eeg's storage layout: one row per run of consecutive samples ("chunk"), not per sample.

Why: with one row per sample a 12-minute, 16-channel recording at 512 Hz is 368,640 JVM
rows, and the preprocessing job spent most of its time reading, shuffling, sorting and
converting those rows to Arrow one value at a time (0.63 s per subject on 2 cores
against 0.09 s of signal processing). A chunk row carries ``n_samples`` consecutive
samples of every channel as one little-endian float32 byte string per channel (stim as
int32), so the same subject is 23 rows whose cells Spark moves as opaque blocks: the
shuffle and the Arrow transfer become memory copies (see benchmarks/preprocess.py).

A chunk row: ``subject_id``, ``sample_idx`` (the index of its first sample, so the
rows still order the recording), ``n_samples``, ``eeg_ch1..N`` (binary, null for a
channel the subject does not have), ``stim`` (binary), plus whatever per-subject
columns ride along (``ingest_id``, ``sfreq``). Chunks start at multiples of the chunk
length wherever the writer saw whole chunks, but readers rely only on the rows of a
subject tiling ``0..n-1`` without gaps or overlaps, which ``decode`` checks.

Pure numpy/pandas: used by ingest (``mapInPandas``), by the per-subject preprocessing
function, and by ``samples`` to give users the per-sample view back.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["FLOAT", "STIM", "BATCH_BYTES", "ChunkError", "encode", "decode", "samples", "is_chunked",
           "sample_count", "rows_per_batch"]

FLOAT = np.dtype("<f4")  # microvolts
STIM = np.dtype("<i4")
# Chunk rows per batch between the JVM and Python, and per Parquet read batch: a long
# recording must never become one batch (two 592 MB subjects at once exhausted a 4 GB heap).
BATCH_BYTES = 64 << 20


def rows_per_batch(chunk: int, n_channels: int) -> int:
    """How many chunk rows of ``chunk`` samples x ``n_channels`` (plus stim) fit in BATCH_BYTES."""
    return max(1, BATCH_BYTES // (chunk * (n_channels * FLOAT.itemsize + STIM.itemsize)))


class ChunkError(ValueError):
    """Chunk rows that do not tile one recording (gap, overlap, wrong byte length)."""


def is_chunked(frame: pd.DataFrame | Any) -> bool:
    """Chunk rows carry ``n_samples``; per-sample rows do not (a pandas or a Spark DataFrame)."""
    return "n_samples" in frame.columns


def sample_count(frame: pd.DataFrame) -> int:
    """Samples a frame of chunk rows or per-sample rows holds."""
    return int(frame["n_samples"].sum()) if is_chunked(frame) else len(frame)


def encode(frame: pd.DataFrame, channels: Sequence[str], stim_column: str, chunk: int,
           key: str = "subject_id", carry: Sequence[str] = ()) -> pd.DataFrame:
    """Per-sample rows (any subjects, any order) -> chunk rows.

    A new row starts at every multiple of ``chunk``, at a new ``key`` value and after any
    gap in ``sample_idx``, so a batch that holds part of a recording encodes exactly that
    part. ``carry`` columns are taken from each chunk's first sample."""
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    cols = [key, "sample_idx", "n_samples", *channels, stim_column, *carry]
    if frame.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})
    keys = frame[key].to_numpy()
    idx = frame["sample_idx"].to_numpy(np.int64)
    order = None
    if np.any(keys[1:] < keys[:-1]) or np.any((keys[1:] == keys[:-1]) & (idx[1:] <= idx[:-1])):
        order = np.lexsort((idx, keys))
        keys, idx = keys[order], idx[order]
    n = len(idx)
    starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]) | (idx[1:] != idx[:-1] + 1) | (idx[1:] % chunk == 0)])
    ends = np.r_[starts[1:], n]

    def column(c: str) -> np.ndarray:
        v = frame[c].to_numpy()
        return v if order is None else v[order]

    out: dict[str, object] = {key: keys[starts], "sample_idx": idx[starts], "n_samples": (ends - starts).astype(np.int32)}
    for c in channels:
        data = frame[c].to_numpy(dtype=FLOAT, na_value=np.nan)  # a channel this file lacks is all null
        data = np.ascontiguousarray(data if order is None else data[order])
        null = np.isnan(data)
        out[c] = [None if null[a:b].all() else data[a:b].tobytes() for a, b in zip(starts, ends)]
    stim = np.ascontiguousarray(np.nan_to_num(np.asarray(column(stim_column), dtype=np.float64)), dtype=STIM)
    out[stim_column] = [stim[a:b].tobytes() for a, b in zip(starts, ends)]
    for c in carry:
        out[c] = column(c)[starts]
    return pd.DataFrame(out, columns=cols)


def decode(chunks: pd.DataFrame, channels: Sequence[str], stim_column: str
           ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One recording's chunk rows -> (channels x samples float64, stim int64, channels with data).

    Channels that are null in every chunk are left out (a subject with fewer channels
    than the table); a channel null in only some chunks, or rows that do not tile
    ``0..n-1``, raise ChunkError."""
    rows = chunks.sort_values("sample_idx", kind="stable")
    first = rows["sample_idx"].to_numpy(np.int64)
    lengths = rows["n_samples"].to_numpy(np.int64)
    if len(first) == 0:
        raise ChunkError("no raw rows")
    expected = np.r_[0, np.cumsum(lengths)[:-1]]
    if np.any(first != expected) or np.any(lengths <= 0):
        bad = int(np.flatnonzero((first != expected) | (lengths <= 0))[0])
        raise ChunkError(f"sample_idx must run 0..{int(lengths.sum()) - 1} without gaps or repeats: "
                         f"the chunk at sample_idx {first[bad]} should start at {expected[bad]}")
    total = int(lengths.sum())
    present = []
    for c in channels:
        nulls = rows[c].isna().to_numpy()
        if nulls.all():
            continue
        if nulls.any():
            raise ChunkError(f"{c} is missing in {int(nulls.sum())} of {len(nulls)} chunks")
        present.append(c)
    data = np.empty((len(present), total), dtype=np.float64)
    for i, c in enumerate(present):
        data[i] = _join(rows[c], FLOAT, total, c)
    stim = _join(rows[stim_column], STIM, total, stim_column).astype(np.int64)
    return data, stim, present


def _join(cells: pd.Series, dtype: np.dtype, total: int, name: str) -> np.ndarray:
    if cells.isna().any():
        raise ChunkError(f"{name} is missing in {int(cells.isna().sum())} chunks")
    buf = b"".join(cells.tolist())
    if len(buf) != total * dtype.itemsize:
        raise ChunkError(f"{name} holds {len(buf) // dtype.itemsize} samples, n_samples says {total}")
    return np.frombuffer(buf, dtype=dtype)


def samples(chunks: pd.DataFrame, channels: Sequence[str], stim_column: str,
            carry: Sequence[str] = ("subject_id",)) -> pd.DataFrame:
    """Chunk rows (each decoded on its own, any subjects) -> per-sample rows: the user's view."""
    parts = []
    for _, row in chunks.iterrows():
        n = int(row["n_samples"])
        part = {c: np.full(n, row[c]) for c in carry}
        part["sample_idx"] = np.arange(int(row["sample_idx"]), int(row["sample_idx"]) + n, dtype=np.int64)
        for c in channels:
            cell = row[c]
            part[c] = (np.full(n, np.nan, dtype=np.float32) if cell is None or (isinstance(cell, float) and np.isnan(cell))
                       else np.frombuffer(cell, dtype=FLOAT).astype(np.float32))
        part[stim_column] = np.frombuffer(row[stim_column], dtype=STIM).astype(np.int32)
        parts.append(pd.DataFrame(part))
    cols = [*carry, "sample_idx", *channels, stim_column]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
