"""Realistic synthetic P300 subjects in the raw input contract.

Not a toy: the background is spatially correlated 1/f noise with per-channel gains,
an occipital alpha rhythm with a wandering envelope, 50 Hz line noise, slow drift,
and eye blinks on frontal channels (so that artifact rejection has work to do). Every
stimulus evokes visual N1/P2 components; targets add an N200 and a centro-parietal
P300 whose latency and amplitude are subject-specific and jitter from trial to trial.
The stimulus schedule has jittered inter-stimulus intervals, one target in six and
never two targets in a row. A subject's data depends only on (seed, subject id).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SubjectParams", "Drift", "DRIFTED", "MONTAGE", "synth_subject", "write_subject_file", "subject_file_name", "synth_landing_zone", "main"]

# 10-20 positions (x: left-right, y: back-front), unit head radius. The first 16 are
# the reference montage; more channels take the following ones.
MONTAGE: list[tuple[str, float, float]] = [
    ("Fp1", -0.3, 0.95), ("Fp2", 0.3, 0.95), ("F3", -0.4, 0.5), ("Fz", 0.0, 0.5),
    ("F4", 0.4, 0.5), ("C3", -0.5, 0.0), ("Cz", 0.0, 0.0), ("C4", 0.5, 0.0),
    ("P7", -0.8, -0.5), ("P3", -0.4, -0.5), ("Pz", 0.0, -0.5), ("P4", 0.4, -0.5),
    ("P8", 0.8, -0.5), ("O1", -0.3, -0.95), ("Oz", 0.0, -1.0), ("O2", 0.3, -0.95),
    ("F7", -0.8, 0.6), ("F8", 0.8, 0.6), ("FC1", -0.25, 0.25), ("FC2", 0.25, 0.25),
    ("T7", -1.0, 0.0), ("T8", 1.0, 0.0), ("CP1", -0.25, -0.25), ("CP2", 0.25, -0.25),
    ("CP5", -0.7, -0.25), ("CP6", 0.7, -0.25), ("FC5", -0.7, 0.25), ("FC6", 0.7, 0.25),
    ("AF3", -0.3, 0.75), ("AF4", 0.3, 0.75), ("PO3", -0.3, -0.75), ("PO4", 0.3, -0.75),
]


@dataclass(frozen=True)
class SubjectParams:
    """What makes one synthetic subject differ from another."""

    p300_amp_uv: float
    p300_latency_s: float
    p300_width_s: float
    n200_amp_uv: float
    alpha_hz: float
    alpha_amp_uv: float
    background_uv: float
    blink_interval_s: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "SubjectParams":
        return cls(
            p300_amp_uv=float(rng.uniform(11.0, 16.0)),
            p300_latency_s=float(rng.uniform(0.30, 0.42)),
            p300_width_s=float(rng.uniform(0.06, 0.09)),
            n200_amp_uv=float(rng.uniform(1.0, 2.5)),
            alpha_hz=float(rng.uniform(9.0, 11.5)),
            alpha_amp_uv=float(rng.uniform(4.0, 9.0)),
            background_uv=float(rng.uniform(8.0, 11.0)),
            blink_interval_s=float(rng.uniform(5.0, 9.0)),
        )


@dataclass(frozen=True)
class Drift:
    """A shifted cohort or recording setup, applied on top of a subject's own parameters:
    what the monitor is meant to notice (docs/monitoring.md)."""

    p300_latency_shift_s: float = 0.0  # later P300
    p300_amp_scale: float = 1.0        # smaller P300
    line_noise_scale: float = 1.0      # more line noise
    electrode_gain: float = 1.0        # another amplifier / electrode impedance: every channel scaled

    def apply(self, p: SubjectParams) -> SubjectParams:
        from dataclasses import replace

        return replace(p, p300_latency_s=p.p300_latency_s + self.p300_latency_shift_s,
                       p300_amp_uv=p.p300_amp_uv * self.p300_amp_scale)


# the demo's drifted cohort: 120 ms later, 40% of the amplitude, 4x line noise, 2x gain
DRIFTED = Drift(p300_latency_shift_s=0.12, p300_amp_scale=0.4, line_noise_scale=4.0, electrode_gain=2.0)


def _positions(n_channels: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array([(x, y) for _, x, y in MONTAGE])
    reps = int(np.ceil(n_channels / len(base)))
    pos = np.concatenate([base + (rng.normal(0, 0.05, base.shape) if r else 0) for r in range(reps)])
    return pos[:n_channels]


def _gauss_topo(pos: np.ndarray, cx: float, cy: float, sigma: float) -> np.ndarray:
    d2 = (pos[:, 0] - cx) ** 2 + (pos[:, 1] - cy) ** 2
    return np.exp(-d2 / (2 * sigma**2))


def _pink(rng: np.random.Generator, n_sources: int, n_samples: int, sfreq: float) -> np.ndarray:
    """Unit-variance 1/f noise, shape (n_sources, n_samples)."""
    spec = np.fft.rfft(rng.standard_normal((n_sources, n_samples)).astype(np.float64), axis=1)
    freqs = np.fft.rfftfreq(n_samples, 1.0 / sfreq)
    spec *= 1.0 / np.sqrt(np.maximum(freqs, 0.5))
    out = np.fft.irfft(spec, n=n_samples, axis=1)
    out /= out.std(axis=1, keepdims=True)
    return out


def _slow(rng: np.random.Generator, n_samples: int, sfreq: float, cutoff_hz: float) -> np.ndarray:
    """A smooth random curve with energy below cutoff_hz, unit std."""
    spec = np.fft.rfft(rng.standard_normal(n_samples))
    freqs = np.fft.rfftfreq(n_samples, 1.0 / sfreq)
    spec[freqs > cutoff_hz] = 0
    out = np.fft.irfft(spec, n=n_samples)
    return out / (out.std() or 1.0)


def _schedule(rng: np.random.Generator, n_samples: int, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Onset samples and labels (1 NonTarget, 2 Target); ISI 0.6-1.0 s, 1 target in 6."""
    onsets, labels = [], []
    t = 2.0
    end = n_samples / sfreq - 1.5
    prev_target = False
    while t < end:
        is_target = (not prev_target) and rng.random() < 1.0 / 5.0  # 1/5 of the allowed slots = 1/6 overall
        onsets.append(int(round(t * sfreq)))
        labels.append(2 if is_target else 1)
        prev_target = is_target
        t += rng.uniform(0.6, 1.0)
    return np.asarray(onsets), np.asarray(labels)


def _add_evoked(data: np.ndarray, onset: int, sfreq: float, topo: np.ndarray, amp: float, lat: float, width: float) -> None:
    half = int(4 * width * sfreq)
    center = onset + int(round(lat * sfreq))
    lo, hi = max(center - half, 0), min(center + half, data.shape[1])
    if lo >= hi:
        return
    t = (np.arange(lo, hi) - center) / sfreq
    data[:, lo:hi] += np.outer(topo * amp, np.exp(-(t**2) / (2 * width**2)))


def synth_subject(
    subject_id: int,
    minutes: float = 12.0,
    n_channels: int = 16,
    sfreq: float = 512.0,
    seed: int = 0,
    params: SubjectParams | None = None,
    drift: Drift | None = None,
) -> pd.DataFrame:
    """One subject's recording as a DataFrame: eeg_ch1..N (float32, uV) and stim (int32)."""
    if n_channels < 1 or minutes <= 0 or sfreq < 100:
        raise ValueError("need n_channels >= 1, minutes > 0, sfreq >= 100 Hz")
    rng = np.random.default_rng([seed, subject_id])
    p = params or SubjectParams.draw(rng)
    drift = drift or Drift()
    p = drift.apply(p)
    n = int(round(minutes * 60 * sfreq))
    pos = _positions(n_channels, rng)
    time = np.arange(n) / sfreq

    # spatially correlated 1/f background with per-channel gains
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=2)
    mixing = np.exp(-dist / 0.5)
    mixing /= np.linalg.norm(mixing, axis=1, keepdims=True)
    gains = rng.uniform(0.8, 1.25, n_channels)
    data = (gains[:, None] * p.background_uv) * (mixing @ _pink(rng, n_channels, n, sfreq))

    # alpha rhythm, occipital-parietal, with a wandering envelope and frequency
    envelope = 0.6 + 0.4 * np.tanh(_slow(rng, n, sfreq, 0.2))
    phase = 2 * np.pi * np.cumsum(p.alpha_hz + 0.3 * _slow(rng, n, sfreq, 0.1)) / sfreq
    data += np.outer(_gauss_topo(pos, 0.0, -0.85, 0.55) * p.alpha_amp_uv, envelope * np.sin(phase))

    # line noise (50 Hz, per-channel amplitude and phase) and slow drift
    line_amp = rng.uniform(2.0, 15.0, n_channels) * drift.line_noise_scale
    line_phase = rng.uniform(0, 2 * np.pi, n_channels)
    data += line_amp[:, None] * np.sin(2 * np.pi * 50.0 * time[None, :] + line_phase[:, None])
    for ch in range(n_channels):
        data[ch] += rng.uniform(15, 40) * _slow(rng, n, sfreq, 0.05)

    # eye blinks: large, frontal, about 250 ms, Poisson-timed
    blink_topo = _gauss_topo(pos, 0.0, 1.0, 0.45)
    t_blink = rng.exponential(p.blink_interval_s)
    while t_blink < n / sfreq - 1:
        _add_evoked(data, int(t_blink * sfreq), sfreq, blink_topo, rng.uniform(100, 250), 0.0, 0.06)
        t_blink += rng.exponential(p.blink_interval_s) + 0.5

    # event-related potentials
    onsets, labels = _schedule(rng, n, sfreq)
    vis = _gauss_topo(pos, 0.0, -0.9, 0.6)
    p300_topo = _gauss_topo(pos, 0.0, -0.35, 0.5)
    n200_topo = _gauss_topo(pos, 0.0, 0.2, 0.6)
    for onset, label in zip(onsets, labels):
        _add_evoked(data, onset, sfreq, vis, -rng.uniform(2, 4), 0.10 + rng.normal(0, 0.01), 0.02)  # N1
        _add_evoked(data, onset, sfreq, vis, rng.uniform(1.5, 3.0), 0.18 + rng.normal(0, 0.015), 0.03)  # P2
        if label == 2:
            _add_evoked(data, onset, sfreq, n200_topo, -p.n200_amp_uv * rng.lognormal(0, 0.3),
                        0.22 + rng.normal(0, 0.02), 0.03)
            _add_evoked(data, onset, sfreq, p300_topo, p.p300_amp_uv * rng.lognormal(0, 0.35),
                        p.p300_latency_s + rng.normal(0, 0.04), p.p300_width_s)

    if drift.electrode_gain != 1.0:
        data *= drift.electrode_gain
    stim = np.zeros(n, dtype=np.int32)
    stim[onsets] = labels
    frame = pd.DataFrame({f"eeg_ch{i + 1}": data[i].astype(np.float32) for i in range(n_channels)})
    frame["stim"] = stim
    return frame


def subject_file_name(subject_id: int) -> str:
    return f"subject_{subject_id:02d}_eeg_stim.parquet"


def write_subject_file(frame: pd.DataFrame, path: str | Path, sfreq: float) -> Path:
    """Write a subject in the raw input contract, with the sampling rate in the file's metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"sfreq"] = repr(float(sfreq)).encode()
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table.replace_schema_metadata(meta), tmp)
    tmp.replace(path)  # atomic: the landing zone never holds a half-written file
    return path


def synth_landing_zone(
    landing_dir: str | Path,
    subjects: int,
    minutes: float = 12.0,
    n_channels: int = 16,
    sfreq: float = 512.0,
    seed: int = 0,
    first_subject: int = 1,
    progress=None,
    drift: Drift | None = None,
) -> list[Path]:
    """Write subjects first_subject..first_subject+subjects-1 into the landing zone."""
    written = []
    for sid in range(first_subject, first_subject + subjects):
        frame = synth_subject(sid, minutes=minutes, n_channels=n_channels, sfreq=sfreq, seed=seed, drift=drift)
        written.append(write_subject_file(frame, Path(landing_dir) / subject_file_name(sid), sfreq))
        if progress:
            progress(sid, written[-1])
    return written


def main(cfg, args, rep) -> int:
    """`p300 synth`: subjects into <root>/landing-zone (local or /dbfs-mounted roots)."""
    sfreq = args.sfreq or cfg.signal.sfreq
    landing = cfg.local_root / cfg.storage.landing
    drift = DRIFTED if getattr(args, "drifted", False) else None
    rep.info(f"writing {args.subjects} {'drifted ' if drift else ''}subjects ({args.minutes:g} min, {args.channels} ch, "
             f"{sfreq:g} Hz) to {landing}")
    paths = synth_landing_zone(
        landing, args.subjects, minutes=args.minutes, n_channels=args.channels, sfreq=sfreq, seed=args.seed,
        first_subject=args.first, progress=lambda sid, path: rep.info(f"  subject {sid:02d} -> {path.name}"),
        drift=drift,
    )
    rep.result(f"synth: wrote {len(paths)} subject files to {landing}")
    return 0
