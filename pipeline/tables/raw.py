"""Readers of raw_eeg: which data each subject has now, its layout, and a per-sample view."""
from __future__ import annotations

from typing import Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline import storage
from pipeline.config import Config
from pipeline.tables.schemas import RAW_EEG
from udfs import raw_chunks
from udfs.preprocess import channel_columns

__all__ = ["raw_subject_state", "raw_channels", "raw_samples"]


def raw_subject_state(spark: SparkSession, cfg: Config, version: int | None = None) -> dict[int, tuple[str, float]]:
    """subject_id -> (ingest_id, sfreq) of the data raw_eeg holds; reads one row per subject.

    Every file's rows carry its ingest id and rate, so sample 0 identifies a subject's
    data; statistics on sample_idx let Delta and Parquet skip everything else."""
    if not storage.table_exists(spark, cfg, RAW_EEG):
        return {}
    rows = (storage.read_table(spark, cfg, RAW_EEG, version).where(F.col("sample_idx") == 0)
            .select("subject_id", "ingest_id", "sfreq").collect())
    return {int(r.subject_id): (r.ingest_id, float(r.sfreq)) for r in rows}


def raw_channels(spark: SparkSession, cfg: Config) -> list[str]:
    """The channels of an existing raw_eeg ([] when there is none); refuses the per-sample
    layout of earlier versions."""
    if not storage.table_exists(spark, cfg, RAW_EEG):
        return []
    raw = storage.read_table(spark, cfg, RAW_EEG)
    if not raw_chunks.is_chunked(raw):
        raise RuntimeError(f"{cfg.table(RAW_EEG)} has the old one-row-per-sample layout; this version stores "
                           "chunk rows (docs/data-contract.md, 'raw_eeg'): move that table aside and ingest the "
                           "archived files again")
    return channel_columns(raw.columns, cfg.signal.channel_prefix)


def raw_samples(spark: SparkSession, cfg: Config, subjects: Iterable[int] | None = None,
                version: int | None = None) -> DataFrame:
    """raw_eeg as one row per sample (subject_id, sample_idx, eeg_ch1..N float, stim int), for people.

    Each chunk row expands on its own (no shuffle); ``subjects`` prunes partitions before
    anything is expanded (a filter on the result would expand every subject first)."""
    raw = storage.read_table(spark, cfg, RAW_EEG, version)
    if subjects is not None:
        raw = raw.where(F.col("subject_id").isin([int(s) for s in subjects]))
    sig = cfg.signal
    chans = channel_columns(raw.columns, sig.channel_prefix)
    schema = T.StructType([
        T.StructField("subject_id", T.IntegerType(), False),
        T.StructField("sample_idx", T.LongType(), False),
        *[T.StructField(c, T.FloatType(), True) for c in chans],
        T.StructField(sig.stim_column, T.IntegerType(), False),
    ])

    def expand(batches):
        for pdf in batches:
            for i in range(len(pdf)):  # chunk by chunk: a batch of chunk rows can hold hours of samples
                yield raw_chunks.samples(pdf.iloc[i:i + 1], chans, sig.stim_column)

    return raw.mapInPandas(expand, schema)
