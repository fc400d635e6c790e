"""The synthetic drift parameters: what the monitor is meant to notice, present in the signal."""
from __future__ import annotations

import numpy as np

from pipeline.synth import DRIFTED, Drift, SubjectParams, synth_subject


def test_no_drift_is_the_same_subject():
    a = synth_subject(3, minutes=0.5, n_channels=4, sfreq=128.0)
    b = synth_subject(3, minutes=0.5, n_channels=4, sfreq=128.0, drift=Drift())
    assert a.equals(b)


def test_drifted_subject_is_louder_and_has_more_line_noise():
    sfreq = 256.0
    base = synth_subject(4, minutes=3, n_channels=16, sfreq=sfreq)
    drifted = synth_subject(4, minutes=3, n_channels=16, sfreq=sfreq, drift=DRIFTED)
    rms = lambda f: float(np.sqrt(np.mean(f["eeg_ch1"].to_numpy(np.float64) ** 2)))  # noqa: E731
    assert rms(drifted) > 1.5 * rms(base)
    spec = lambda f: np.abs(np.fft.rfft(f["eeg_ch7"].to_numpy(np.float64)))  # noqa: E731
    freqs = np.fft.rfftfreq(len(base), 1 / sfreq)
    line = np.argmin(np.abs(freqs - 50.0))
    assert spec(drifted)[line] > 4 * spec(base)[line]


def test_drift_moves_the_p300_later_and_makes_it_smaller():
    rng = np.random.default_rng(0)
    p = SubjectParams.draw(rng)
    q = DRIFTED.apply(p)
    assert q.p300_latency_s == p.p300_latency_s + DRIFTED.p300_latency_shift_s
    assert q.p300_amp_uv == p.p300_amp_uv * DRIFTED.p300_amp_scale < p.p300_amp_uv
