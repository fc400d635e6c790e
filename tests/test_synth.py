import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.synth import MONTAGE, subject_file_name, synth_landing_zone, synth_subject


def test_files_match_the_raw_input_contract(tmp_path):
    paths = synth_landing_zone(tmp_path, 3, minutes=0.5, sfreq=256.0, seed=3)
    assert [p.name for p in paths] == ["subject_01_eeg_stim.parquet", "subject_02_eeg_stim.parquet",
                                       "subject_03_eeg_stim.parquet"]
    for p in paths:
        frame = pd.read_parquet(p)
        assert list(frame.columns) == [f"eeg_ch{i}" for i in range(1, 17)] + ["stim"]
        assert all(frame[f"eeg_ch{i}"].dtype == np.float32 for i in range(1, 17))
        assert frame["stim"].dtype == np.int32 and set(frame["stim"].unique()) == {0, 1, 2}
        assert len(frame) == 30 * 256
        assert pq.read_schema(p).metadata[b"sfreq"] == b"256.0"
    assert subject_file_name(123) == "subject_123_eeg_stim.parquet"


def test_deterministic_per_seed_and_subject():
    a = synth_subject(4, minutes=0.2, seed=1)
    pd.testing.assert_frame_equal(a, synth_subject(4, minutes=0.2, seed=1))
    assert not a.equals(synth_subject(4, minutes=0.2, seed=2))
    assert not a.equals(synth_subject(5, minutes=0.2, seed=1))


def test_schedule_one_target_in_six_never_two_in_a_row():
    stim = synth_subject(1, minutes=6, n_channels=4, sfreq=256.0)["stim"].to_numpy()
    onsets = np.flatnonzero(stim)
    labels = stim[onsets]
    assert 0.12 < (labels == 2).mean() < 0.21
    assert not np.any((labels[1:] == 2) & (labels[:-1] == 2))
    isi = np.diff(onsets) / 256.0
    assert isi.min() >= 0.59 and isi.max() <= 1.01 and isi.std() > 0.05


def test_options_and_artifact_topography():
    frame = synth_subject(2, minutes=1, n_channels=24, sfreq=500.0)
    assert frame.shape == (30000, 25)
    from scipy.signal import butter, sosfiltfilt

    band = sosfiltfilt(butter(4, [1.0, 20.0], btype="band", fs=500.0, output="sos"),
                       frame[["eeg_ch1", "eeg_ch15"]].to_numpy(np.float64), axis=0)
    fp1, oz = np.percentile(np.abs(band), 99.9, axis=0)
    assert fp1 > 2 * oz  # blinks make frontal channels far more peaky than occipital ones
    assert MONTAGE[10][0] == "Pz"
    with pytest.raises(ValueError):
        synth_subject(1, minutes=0)


@pytest.mark.slow  # a full MNE preprocessing chain and cross-validation on synthetic subjects
def test_realistic_difficulty_with_an_mne_chain_and_shrinkage_lda():
    """One subject, the reference chain in plain MNE: AUC well above chance, well below 1."""
    mne = pytest.importorskip("mne")
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = synth_subject(1, minutes=12, seed=0)
    channels = [c for c in frame.columns if c.startswith("eeg_ch")]
    info = mne.create_info(channels + ["stim"], 512.0, ["eeg"] * len(channels) + ["stim"])
    data = np.vstack([frame[channels].to_numpy(np.float64).T * 1e-6, frame["stim"].to_numpy()[None]])
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.filter(1.0, 20.0, picks="eeg", fir_design="firwin", verbose="error")
    events = mne.find_events(raw, stim_channel="stim", verbose="error")
    epochs = mne.Epochs(raw, events, {"NonTarget": 1, "Target": 2}, -0.1, 0.6, baseline=(-0.1, 0.0),
                        reject={"eeg": 100e-6}, picks="eeg", preload=True, verbose="error")
    rejected = 1 - len(epochs) / len(events)
    epochs.resample(100.0, verbose="error")
    X = epochs.get_data().reshape(len(epochs), -1)
    y = (epochs.events[:, 2] == 2).astype(int)
    clf = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
    auc = cross_val_score(clf, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0), scoring="roc_auc").mean()
    assert 0.80 <= auc <= 0.95, auc
    assert 0.03 < rejected < 0.35, rejected  # blinks give artifact rejection real work
