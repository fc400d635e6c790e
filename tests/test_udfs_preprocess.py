"""The per-subject function alone (no Spark): contract, edge cases, and parity with MNE."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy import signal

from pipeline.synth import synth_subject
from udfs.preprocess import (NoEpochsError, PreprocessError, Settings, bandpass_stop_hz, design_antialias,
                             design_fir, preprocess_subject, run_subject)


def raw_frame(sid: int = 3, minutes: float = 1.0, n_channels: int = 4, sfreq: float = 128.0, seed: int = 0) -> pd.DataFrame:
    raw = synth_subject(sid, minutes=minutes, n_channels=n_channels, sfreq=sfreq, seed=seed)
    raw.insert(0, "subject_id", np.int32(sid))
    raw.insert(1, "sample_idx", np.arange(len(raw), dtype=np.int64))
    return raw


def test_settings_from_config_pickle_and_override(cfg):
    s = Settings.from_config(cfg, sfreq=250)
    assert s.sfreq == 250.0 and s.n_times == cfg.preprocess.n_times == 71
    assert Settings.from_config(cfg).sfreq == cfg.signal.sfreq
    assert pickle.loads(pickle.dumps(s)) == s
    assert s.notch_freqs == ()  # 50 Hz is outside 1-20 Hz: no notch with the defaults
    assert Settings(l_freq=1, h_freq=45, line_freq=16.7).notch_freqs == (16.7, 33.4)


@pytest.mark.parametrize("sfreq", [128.0, 250.0, 256.0, 512.0])
def test_feature_length_depends_on_configuration_only(sfreq):
    out = preprocess_subject(raw_frame(sfreq=sfreq, minutes=0.5), Settings(sfreq=sfreq))
    assert list(out.columns) == ["subject_id", "epoch_idx", "event_sample", "label", "features"]
    assert [str(t) for t in out.dtypes] == ["int32", "int32", "int64", "int32", "object"]
    assert len(out) > 10 and set(out["label"]) == {1, 2}
    assert all(f.dtype == np.float32 and f.shape == (4 * 71,) for f in out["features"])


def test_row_order_does_not_matter_and_labels_follow_stim():
    raw = raw_frame()
    s = Settings(sfreq=128.0)
    a = preprocess_subject(raw, s)
    b = preprocess_subject(raw.sample(frac=1.0, random_state=1), s)
    pd.testing.assert_frame_equal(a.drop(columns="features"), b.drop(columns="features"))
    np.testing.assert_array_equal(np.stack(a["features"]), np.stack(b["features"]))
    stim = raw["stim"].to_numpy()
    assert (stim[a["event_sample"]] == a["label"]).all()  # label 1 NonTarget, 2 Target at the onset sample
    assert a["subject_id"].eq(3).all() and a["epoch_idx"].is_monotonic_increasing


def test_baseline_removed_and_rejection_threshold():
    raw = raw_frame()
    res = run_subject(raw, Settings(sfreq=128.0))
    x = np.stack(res.features["features"]).reshape(len(res.features), 4, 71)
    assert np.abs(x[:, :, :11].mean(axis=2)).max() < 1e-3  # baseline -0.1..0 s = first 11 samples
    assert (x.max(axis=2) - x.min(axis=2)).max() <= 100.0
    assert res.n_events == res.n_epochs + res.n_rejected + res.n_out_of_bounds and res.n_rejected > 0
    lenient = run_subject(raw, Settings(sfreq=128.0, reject_peak_to_peak_uv=None))
    assert lenient.n_epochs == res.n_events - res.n_out_of_bounds


def test_failures_raise_clear_errors():
    raw = raw_frame()
    no_events = raw.assign(stim=np.int32(0))
    with pytest.raises(NoEpochsError, match="no events") as e:
        preprocess_subject(no_events, Settings(sfreq=128.0))
    assert e.value.status == "empty"
    loud = raw.assign(**{c: raw[c] * 100 for c in raw.columns if c.startswith("eeg_ch")})
    with pytest.raises(NoEpochsError, match="all .* epochs rejected"):
        preprocess_subject(loud, Settings(sfreq=128.0))
    edge = raw.assign(stim=np.where(np.arange(len(raw)) == 3, 2, 0).astype(np.int32))
    with pytest.raises(NoEpochsError, match="too close to the recording's edges"):
        preprocess_subject(edge, Settings(sfreq=128.0))
    with pytest.raises(PreprocessError, match="sample_idx must run") as e:
        preprocess_subject(raw.drop(index=100), Settings(sfreq=128.0))
    assert e.value.status == "failed"
    with pytest.raises(PreprocessError, match="NaN"):
        preprocess_subject(raw.assign(eeg_ch2=np.where(raw.index == 7, np.nan, raw["eeg_ch2"])), Settings(sfreq=128.0))
    with pytest.raises(PreprocessError, match="one subject"):
        preprocess_subject(pd.concat([raw, raw.assign(subject_id=np.int32(4))]), Settings(sfreq=128.0))


def test_absent_channels_of_a_wider_table_are_ignored():
    raw = raw_frame()
    wide = raw.assign(eeg_ch5=np.float32("nan"), eeg_ch6=np.float32("nan"))  # how Spark delivers nulls
    out = preprocess_subject(wide, Settings(sfreq=128.0))
    assert out["features"].iloc[0].shape == (4 * 71,)


# ---- parity with a plain MNE implementation of the same chain --------------------------------

def _mne_chain(raw: pd.DataFrame, sfreq: float, resample_method: str = "fft", notch: tuple = ()):
    mne = pytest.importorskip("mne")
    mne.set_log_level("ERROR")
    chans = [c for c in raw.columns if c.startswith("eeg_ch")]
    info = mne.create_info(chans + ["STI"], sfreq, ["eeg"] * len(chans) + ["stim"])
    data = np.vstack([raw[chans].to_numpy(np.float64).T * 1e-6, raw["stim"].to_numpy()[None, :]])
    r = mne.io.RawArray(data, info)
    events = mne.find_events(r, shortest_event=1)
    r.filter(1.0, 20.0, picks="eeg")
    if notch:
        r.notch_filter(list(notch), picks="eeg")
    r, events = r.resample(100.0, events=events, method=resample_method)
    epochs = mne.Epochs(r, events, {"NonTarget": 1, "Target": 2}, tmin=-0.1, tmax=0.6, baseline=(-0.1, 0.0),
                        reject={"eeg": 100e-6}, preload=True, picks="eeg")
    epochs.drop_bad()
    return epochs.selection, epochs.events[:, 2], epochs.get_data().reshape(len(epochs), -1) * 1e6


@pytest.mark.slow  # MNE's full chain, per sampling rate
@pytest.mark.parametrize("sfreq,method", [(512.0, "fft"), (250.0, "polyphase")])
def test_matches_mne(sfreq, method):
    """Same kept epochs and labels as MNE, features correlated above 0.999.

    At 512 Hz against MNE's default FFT resampling; at 250 Hz against its polyphase
    resampler (MNE's FFT path pads to a fast length there, which shifts its own output
    slightly; scipy's exact FFT resample agrees with ours)."""
    raw = raw_frame(sid=5, minutes=2.0, n_channels=8, sfreq=sfreq)
    out = preprocess_subject(raw, Settings(sfreq=sfreq))
    selection, labels, x_mne = _mne_chain(raw, sfreq, method)
    np.testing.assert_array_equal(out["epoch_idx"].to_numpy(), selection)
    np.testing.assert_array_equal(out["label"].to_numpy(), labels)
    x = np.stack(out["features"]).astype(np.float64)
    assert x.shape == x_mne.shape
    assert np.corrcoef(x.ravel(), x_mne.ravel())[0, 1] > 0.999
    assert min(np.corrcoef(a, b)[0, 1] for a, b in zip(x, x_mne)) > 0.99


def test_the_filter_is_mnes_and_travels_as_taps():
    mne = pytest.importorskip("mne")
    for sfreq in (100.0, 250.0):
        ref = mne.filter.create_filter(None, sfreq, 1.0, 20.0, fir_design="firwin", verbose=False)
        np.testing.assert_array_equal(design_fir(sfreq, 1.0, 20.0), ref)
    # band-pass and notch in one kernel = MNE's filter_data, then its notch_filter (away from the edges)
    x = np.random.default_rng(0).standard_normal((2, 250 * 30))
    ref = mne.filter.notch_filter(mne.filter.filter_data(x, 250.0, 1.0, 45.0, verbose=False), 250.0, [16.7, 33.4],
                                  verbose=False)
    from udfs.preprocess import _filter_zero_phase
    h = design_fir(250.0, 1.0, 45.0, (16.7, 33.4))
    ours = _filter_zero_phase(x, h)
    edge = len(h)
    np.testing.assert_allclose(ours[:, edge:-edge], ref[:, edge:-edge], atol=1e-9)
    # the driver ships the taps: the executors' Settings never design (never import MNE)
    s = Settings(l_freq=1.0, h_freq=45.0, line_freq=16.7).with_fir()
    taps = design_fir(s.resample_hz, 1.0, 45.0, s.notch_freqs)
    assert s.fir is not None and np.array_equal(pickle.loads(pickle.dumps(s)).filter_taps(), taps)


@pytest.mark.parametrize("sfreq, up, down", [(512.0, 25, 128), (256.0, 25, 64), (250.0, 2, 5), (1000.0, 1, 10)])
def test_antialias_filter_keeps_the_band_and_stops_what_would_fold_into_it(sfreq, up, down):
    keep = bandpass_stop_hz(100.0, 20.0)  # 25 Hz: the band-pass removes everything above
    h = design_antialias(sfreq, up, down, keep)
    assert h is not None and len(h) < 2 * 10 * max(up, down) + 1  # shorter than resample_poly's own
    freqs, response = signal.freqz(h, worN=1 << 16, fs=sfreq * up)
    gain_db = 20 * np.log10(np.abs(response) + 1e-30)
    assert np.abs(gain_db[(freqs >= 1) & (freqs <= 20)]).max() < 0.01  # the band, flat
    assert gain_db[freqs >= 100.0 - keep].max() < -63  # all that would fold into 0-25 Hz at 100 Hz
    assert design_antialias(sfreq, up, down, 50.0) is None  # nothing left to trade: resample_poly's default
