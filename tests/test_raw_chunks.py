"""raw_eeg's chunk layout: encode/decode round trips exactly, and broken tilings are named."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from udfs import raw_chunks
from udfs.preprocess import PreprocessError, Settings, run_subject

CH = ["eeg_ch1", "eeg_ch2", "eeg_ch3"]


def per_sample(sid: int, n: int, seed: int = 0, first: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + sid)
    frame = pd.DataFrame({c: rng.normal(0, 20, n).astype(np.float32) for c in CH})
    frame["stim"] = np.where(rng.random(n) < 0.01, rng.integers(1, 3, n), 0).astype(np.int32)
    frame.insert(0, "sample_idx", np.arange(first, first + n, dtype=np.int64))
    frame.insert(0, "subject_id", np.int32(sid))
    frame["sfreq"] = 256.0
    return frame


def test_round_trip_any_order_several_subjects_and_partial_batches():
    a, b = per_sample(1, 1000), per_sample(2, 777)
    shuffled = pd.concat([a, b]).sample(frac=1.0, random_state=3)
    rows = raw_chunks.encode(shuffled, CH, "stim", chunk=256, carry=("sfreq",))
    # chunks start at multiples of 256 and never mix subjects
    assert rows.groupby("subject_id")["n_samples"].sum().to_dict() == {1: 1000, 2: 777}
    assert (rows["sample_idx"] % 256 == 0).all() and rows["n_samples"].max() == 256
    assert (rows["sfreq"] == 256.0).all()
    for sid, src in ((1, a), (2, b)):
        data, stim, chans = raw_chunks.decode(rows[rows.subject_id == sid].sample(frac=1.0, random_state=1), CH, "stim")
        assert chans == CH
        np.testing.assert_array_equal(data, src[CH].to_numpy(np.float64).T)
        np.testing.assert_array_equal(stim, src["stim"].to_numpy())
    # the same recording delivered in two batches that split a chunk encodes to rows that still tile it
    halves = pd.concat([raw_chunks.encode(a.iloc[:300], CH, "stim", 256), raw_chunks.encode(a.iloc[300:], CH, "stim", 256)])
    assert list(halves["sample_idx"]) == [0, 256, 300, 512, 768] and halves["n_samples"].sum() == 1000
    np.testing.assert_array_equal(raw_chunks.decode(halves, CH, "stim")[0], data_of(a))
    # the per-sample view gives the rows back
    back = raw_chunks.samples(rows[rows.subject_id == 1], CH, "stim")
    pd.testing.assert_frame_equal(back.sort_values("sample_idx", ignore_index=True),
                                  a.drop(columns="sfreq").reset_index(drop=True), check_dtype=False)


def data_of(frame: pd.DataFrame) -> np.ndarray:
    return frame[CH].to_numpy(np.float64).T


def test_missing_channel_and_broken_tilings():
    a = per_sample(1, 600).assign(eeg_ch3=np.nan)  # a file with two channels in a three-channel table
    rows = raw_chunks.encode(a, CH, "stim", chunk=256)
    assert rows["eeg_ch3"].isna().all()
    data, _, chans = raw_chunks.decode(rows, CH, "stim")
    assert chans == ["eeg_ch1", "eeg_ch2"] and data.shape == (2, 600)

    full = raw_chunks.encode(per_sample(1, 600), CH, "stim", chunk=256)
    with pytest.raises(raw_chunks.ChunkError, match="should start at 256"):
        raw_chunks.decode(full.drop(index=1), CH, "stim")  # a gap
    with pytest.raises(raw_chunks.ChunkError, match="without gaps or repeats"):
        raw_chunks.decode(pd.concat([full, full.iloc[[1]]]), CH, "stim")  # a repeat
    patchy = full.copy()
    patchy.loc[1, "eeg_ch2"] = None
    with pytest.raises(raw_chunks.ChunkError, match="eeg_ch2 is missing in 1 of 3 chunks"):
        raw_chunks.decode(patchy, CH, "stim")
    short = full.copy()
    short.loc[0, "n_samples"] = 255
    with pytest.raises(raw_chunks.ChunkError):
        raw_chunks.decode(short, CH, "stim")
    # the per-subject function reports these as a failed subject, not a crash
    with pytest.raises(PreprocessError, match="without gaps"):
        run_subject(full.drop(index=1), Settings(sfreq=256.0))


def test_run_subject_gives_the_same_features_from_chunks_and_from_samples():
    frame = per_sample(4, 256 * 60)
    onsets = np.arange(200, len(frame) - 200, 150)
    frame["stim"] = 0
    frame.loc[onsets, "stim"] = np.where(np.arange(len(onsets)) % 6 == 2, 2, 1)
    s = Settings(sfreq=256.0, reject_peak_to_peak_uv=None)
    from_samples = run_subject(frame, s).features
    from_chunks = run_subject(raw_chunks.encode(frame, CH, "stim", chunk=1000), s).features
    assert len(from_samples) == len(from_chunks) > 90
    np.testing.assert_array_equal(np.stack(from_samples["features"]), np.stack(from_chunks["features"]))
    pd.testing.assert_frame_equal(from_samples.drop(columns="features"), from_chunks.drop(columns="features"))
