"""The band-pass filter designed by MNE on the driver (udfs.preprocess.design_fir, taps shipped
in Settings.fir) against the hand port of MNE's design it replaced (git revision --baseline).

    python benchmarks/preprocess_filter.py [--baseline main~N] [--subjects 4] [--minutes 12]

Prints, in one run on the same synthetic subjects:
  * per subject, udfs.preprocess.run_subject (loop (b) of benchmarks/preprocess.py): the
    baseline's against this tree's with the taps shipped, and the ratio;
  * the first subject in a fresh interpreter (an executor's Python worker): designing the
    taps there (importing MNE) against receiving them, and the baseline's design;
  * the largest difference between the two versions' features (parity).
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from udfs import raw_chunks  # noqa: E402
from udfs.preprocess import Settings, run_subject  # noqa: E402


def baseline_module(rev: str, where: Path):
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:udfs/preprocess.py"], check=True,
                         capture_output=True, text=True).stdout
    path = where / "baseline_preprocess.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("baseline_preprocess", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there while the class is built
    spec.loader.exec_module(module)
    return module


def fresh(code: str) -> float:
    """Seconds a fresh interpreter takes for ``code`` (an executor worker's first subject)."""
    out = subprocess.run([sys.executable, "-c", f"import time; t = time.perf_counter()\n{code}\n"
                          "print(time.perf_counter() - t)"], check=True, capture_output=True, text=True,
                         cwd=ROOT).stdout
    return float(out.split()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="5568327")  # the last commit with the hand-ported design
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--sfreq", type=float, default=512.0)
    args = ap.parse_args()
    from pipeline.synth import synth_subject

    with tempfile.TemporaryDirectory(prefix="p300-filter-bench-") as tmp:
        old = baseline_module(args.baseline, Path(tmp))
        frames = []
        for sid in range(1, args.subjects + 1):
            f = synth_subject(sid, minutes=args.minutes, n_channels=args.channels, sfreq=args.sfreq, seed=sid)
            raw = f.assign(subject_id=np.int32(sid), sample_idx=np.arange(len(f), dtype=np.int64))
            chans = [c for c in f.columns if c.startswith("eeg_ch")]
            frames.append(raw_chunks.encode(raw, chans, "stim", 16384))
        new_settings = Settings(sfreq=args.sfreq).with_fir()
        old_settings = old.Settings(sfreq=args.sfreq)
        run_subject(frames[0], new_settings), old.run_subject(frames[0], old_settings)  # warm caches
        timings = {}
        for name, fn, s in (("baseline (hand-ported design)", old.run_subject, old_settings),
                            ("MNE-designed taps, shipped", run_subject, new_settings)):
            t = time.perf_counter()
            outs = [fn(raw, s).features for raw in frames]
            timings[name] = (time.perf_counter() - t) / len(frames)
            if name.startswith("baseline"):
                ref = outs
        diff = max(float(np.abs(np.stack(a["features"]) - np.stack(b["features"])).max()) for a, b in zip(outs, ref))
        for name, sec in timings.items():
            print(f"per subject, {name}: {sec * 1000:.0f} ms")
        base, new = timings.values()
        print(f"ratio new/baseline per subject: {new / base:.2f}")
        print(f"largest feature difference (uV): {diff:.2e}")
        cold_mne = fresh("from udfs.preprocess import design_fir; design_fir(100.0, 1.0, 20.0)")
        cold_old = fresh(f"import sys; sys.path.insert(0, {tmp!r}); import baseline_preprocess as b; "
                         "b.design_bandpass(100.0, 1.0, 20.0)")
        print(f"fresh interpreter, designing the taps: with MNE {cold_mne:.2f} s, hand port {cold_old:.3f} s; "
              "shipped taps: 0 s in the executors (the driver designs once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
