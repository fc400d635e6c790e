"""Preprocessing: the original's sequential MNE loop vs the per-subject function vs the Spark job.

    python benchmarks/preprocess.py            # N = 5 and 20 subjects, 12 min, 16 ch, 512 Hz
    python benchmarks/preprocess.py --quick    # N = 2 and 4, 1 min, 4 ch, 256 Hz (validation)
    python benchmarks/preprocess.py --master 'local[16]'   # the Spark job on more cores
    python benchmarks/preprocess.py --jit tiered           # the driver JVM's JIT: auto (default), c1, tiered
    python benchmarks/preprocess.py --set spark.driver_memory=16g   # any config override

For each size N it measures, in one run:

  (a)  the original's loop: per subject pandas.read_parquet + the literal MNE chain
       (RawArray, filter, find_events, Epochs with baseline and rejection, drop_bad,
       epoch-level resample), one subject after another;
  (a') the same MNE chain resampling the continuous signal first (reference only);
  (b)  udfs.preprocess.run_subject alone, in a loop over in-memory frames holding the
       raw_eeg chunk rows the Spark job hands it (and, for reference, per-sample rows);
  (c)  `preprocess()` on a raw_eeg table holding N subjects: one applyInPandas, from
       reading raw_eeg to the committed features table and preprocess_log, with the
       SparkSession start excluded and reported apart.

From the two sizes it fits T(N) = fixed + marginal * N per variant and prints the
ratios against its targets. Data (synthetic subjects, ingested once per
size, untimed) stays under --workdir so a rerun skips generation.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import Config, load_config  # noqa: E402


def _cfg(root: Path, master: str, sets: Sequence[str] = ()) -> Config:
    return load_config(root=str(root), env={}, overrides=[f"spark.master={master}", *sets])


def add_config_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--jit", choices=("auto", "c1", "tiered"), default=None,
                    help="the driver JVM's JIT for (c) (spark.jit; default: the config's, auto)")
    ap.add_argument("--jvm-options", default=None, metavar="OPTS",
                    help="extra driver JVM options for (c) (spark.driver_java_options)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="any other config override, e.g. spark.driver_memory=16g (repeatable)")


def config_overrides(args: argparse.Namespace) -> list[str]:
    """--jit, --jvm-options and --set as config overrides (handed to each child as --set)."""
    return ([f"spark.jit={args.jit}"] if args.jit else []) \
        + ([f"spark.driver_java_options={args.jvm_options}"] if args.jvm_options else []) + list(args.sets)


def child_flags(sets: Sequence[str]) -> list[str]:
    return [f"--set={s}" for s in sets]


def describe_config(sets: Sequence[str]) -> str:
    from pipeline.spark import driver_java_options

    from pipeline.class_archive import archive_options, archive_path

    cfg = _cfg(Path("."), "local[*]", sets)
    spark = cfg.spark
    archive = f"mapped, {archive_path(cfg)}" if archive_options(cfg) else "none (p300 jvm-cache builds one)"
    return (f"JIT {spark.jit}: driver JVM options {driver_java_options(spark, os.cpu_count() or 1) or '(none)'}"
            + f"; class archive {archive}" + (f"; overrides {' '.join(sets)}" if sets else ""))


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _write_subject(sid: int, path: Path, minutes: float, channels: int, sfreq: float) -> None:
    from pipeline.synth import synth_subject, write_subject_file

    write_subject_file(synth_subject(sid, minutes=minutes, n_channels=channels, sfreq=sfreq, seed=0), path, sfreq)


def generate(landing: Path, n: int, minutes: float, channels: int, sfreq: float) -> list[Path]:
    """Subjects 1..n under landing, the missing ones generated in parallel (one process per core)."""
    from concurrent.futures import ProcessPoolExecutor

    from pipeline.synth import subject_file_name

    landing.mkdir(parents=True, exist_ok=True)
    paths = [landing / subject_file_name(sid) for sid in range(1, n + 1)]
    missing = [(sid, p) for sid, p in enumerate(paths, start=1) if not p.exists()]
    if missing:
        with ProcessPoolExecutor(max_workers=min(len(missing), os.cpu_count() or 1)) as pool:
            for f in [pool.submit(_write_subject, sid, p, minutes, channels, sfreq) for sid, p in missing]:
                f.result()
    return paths


def mne_chain(frame, sfreq: float, continuous_resample: bool) -> np.ndarray:
    """The reference pipeline's per-subject MNE code (microvolt features, channels x times flattened)."""
    import mne

    chans = [c for c in frame.columns if c.startswith("eeg_ch")]
    info = mne.create_info(chans + ["STI"], sfreq, ["eeg"] * len(chans) + ["stim"])
    data = np.vstack([frame[chans].to_numpy(np.float64).T * 1e-6, frame["stim"].to_numpy()[None, :]])
    raw = mne.io.RawArray(data, info, verbose=False)
    events = mne.find_events(raw, shortest_event=1, verbose=False)
    raw.filter(1.0, 20.0, picks="eeg", verbose=False)
    if continuous_resample:
        raw, events = raw.resample(100.0, events=events, verbose=False)
    epochs = mne.Epochs(raw, events, {"NonTarget": 1, "Target": 2}, tmin=-0.1, tmax=0.6, baseline=(-0.1, 0.0),
                        reject={"eeg": 100e-6}, preload=True, picks="eeg", verbose=False)
    epochs.drop_bad(verbose=False)
    if not continuous_resample:
        epochs.resample(100.0, verbose=False)
    return epochs.get_data().reshape(len(epochs), -1) * 1e6


def time_loops(paths: list[Path], sfreq: float, settings, chunk: int) -> dict[str, float]:
    """Each variant in its own loop over the subjects (one after another, as the original)."""
    import pandas as pd

    from udfs import raw_chunks
    from udfs.preprocess import run_subject

    out = {}
    t = time.perf_counter()
    frames = [pd.read_parquet(p) for p in paths]
    out["a_read"] = time.perf_counter() - t
    t = time.perf_counter()
    for frame in frames:
        mne_chain(frame, sfreq, continuous_resample=False)
    out["a"] = out["a_read"] + time.perf_counter() - t
    t = time.perf_counter()
    for frame in frames:
        mne_chain(frame, sfreq, continuous_resample=True)
    out["a2"] = time.perf_counter() - t
    raws = [f.assign(subject_id=np.int32(i), sample_idx=np.arange(len(f), dtype=np.int64))
            for i, f in enumerate(frames, start=1)]
    chans = [c for c in frames[0].columns if c.startswith("eeg_ch")]
    chunked = [raw_chunks.encode(r, chans, "stim", chunk) for r in raws]  # what the Spark job hands the function
    t = time.perf_counter()
    for raw in chunked:
        run_subject(raw, settings)
    out["b"] = time.perf_counter() - t
    t = time.perf_counter()
    for raw in raws:
        run_subject(raw, settings)
    out["b_samples"] = time.perf_counter() - t
    return out


def _task_slots(master: str, spark) -> int:
    """Concurrent tasks: local -> 1, local[N] / local[N,F] -> N, local[*] -> cores; else Spark's parallelism."""
    import re

    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master)
    if not m:
        return spark.sparkContext.defaultParallelism
    return os.cpu_count() or 1 if m.group(1) == "*" else int(m.group(1) or 1)


def spark_child(root: Path, files: list[Path], master: str, sets: Sequence[str]) -> int:
    """(c) in a fresh process, as `p300 job ingest_and_preprocess` runs: prints one JSON line."""
    from pipeline.ingest import ingest
    from pipeline.preprocess import preprocess
    from pipeline.spark import get_spark

    shutil.rmtree(root, ignore_errors=True)
    cfg = _cfg(root, master, sets)
    landing = Path(cfg.landing_dir)
    landing.mkdir(parents=True)
    for f in files:
        os.link(f, landing / f.name)
    t = time.perf_counter()
    spark = get_spark(cfg)
    out = {"session_s": time.perf_counter() - t, "parallelism": _task_slots(spark.sparkContext.master, spark)}
    t = time.perf_counter()
    assert ingest(spark, cfg).count("ingested") == len(files)
    out["ingest_s"] = time.perf_counter() - t
    t = time.perf_counter()
    s = preprocess(spark, cfg)
    out["preprocess_s"] = time.perf_counter() - t
    assert s.count("ok") == len(files), s.log
    out["epochs"] = sum(r["n_epochs"] for r in s.log)
    out["stages"] = s.timings
    out["udf_s"] = sum(r["seconds"] for r in s.log)
    t = time.perf_counter()
    assert preprocess(spark, cfg).log == []
    out["noop_s"] = time.perf_counter() - t
    print(json.dumps(out), flush=True)
    spark.stop()
    return 0


def run_child(root: Path, files: Sequence[Path], master: str, sets: Sequence[str]) -> dict:
    """``spark_child`` in a fresh process; its JSON line (exits when the child fails)."""
    cmd = [sys.executable, __file__, "--child", str(root), "--master", master, *map(str, files), *child_flags(sets)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"child for {len(files)} subject(s) on {master} failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fit(t_small: float, t_large: float, n_small: int, n_large: int) -> tuple[float, float]:
    marginal = (t_large - t_small) / (n_large - n_small)
    return t_small - marginal * n_small, marginal


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to validate the script")
    ap.add_argument("--sizes", type=int, nargs=2, default=None, metavar=("N1", "N2"))
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--channels", type=int, default=None)
    ap.add_argument("--sfreq", type=float, default=None)
    ap.add_argument("--master", default="local[*]", help="Spark master for (c) (default local[*])")
    ap.add_argument("--workdir", default="/tmp/p300-bench-preprocess", help="data kept here between runs")
    add_config_arguments(ap)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sets = config_overrides(args)
    if args.child:
        return spark_child(Path(args.child), [Path(f) for f in args.files], args.master, sets)
    n1, n2 = args.sizes or ((2, 4) if args.quick else (5, 20))
    minutes = args.minutes or (1.0 if args.quick else 12.0)
    channels = args.channels or (4 if args.quick else 16)
    sfreq = args.sfreq or (256.0 if args.quick else 512.0)
    cores = os.cpu_count() or 1
    work = Path(args.workdir) / f"{n2}x{minutes:g}m{channels}ch{sfreq:g}"
    print(f"# preprocess benchmark: N = {n1} and {n2} subjects of {minutes:g} min x {channels} ch at {sfreq:g} Hz; "
          f"{cores} cores; Spark master {args.master}; {describe_config(sets)}; "
          f"load average at start {load_average()}", flush=True)

    t0 = time.perf_counter()
    paths = generate(work / "landing", n2, minutes, channels, sfreq)
    print(f"# data: {len(paths)} files ready in {time.perf_counter() - t0:.1f}s", flush=True)

    from udfs.preprocess import Settings

    cfg = _cfg(work, args.master, sets)
    settings = Settings.from_config(cfg, sfreq)
    chunk = cfg.storage.raw_chunk_samples
    loops: dict[int, dict[str, float]] = {}
    time_loops(paths[:1], sfreq, settings, chunk)  # warm imports and caches for every variant
    for n in (n1, n2):
        loops[n] = time_loops(paths[:n], sfreq, settings, chunk)
        print(f"# loops N={n}: " + ", ".join(f"{k} {v:.2f}s" for k, v in loops[n].items()), flush=True)

    spark_t, child = {}, {}
    for n in (n1, n2):  # each size in a fresh process: session start, ingest, then the timed job
        child[n] = run_child(work / f"root{n}", paths[:n], args.master, sets)
        spark_t[n] = child[n]["preprocess_s"]
        print(f"# (c) N={n}: session start {child[n]['session_s']:.1f}s, ingest {child[n]['ingest_s']:.1f}s "
              f"(untimed setup), preprocess {spark_t[n]:.2f}s ({child[n]['epochs']} epochs), "
              f"rerun with nothing pending {child[n]['noop_s']:.2f}s; stages "
              + ", ".join(f"{k} {v:.2f}s" for k, v in child[n]["stages"].items())
              + f"; time inside the per-subject function {child[n]['udf_s']:.2f}s", flush=True)
    session_s = float(np.mean([c["session_s"] for c in child.values()]))
    noop_s = child[n2]["noop_s"]
    par = child[n2]["parallelism"]

    rows = []
    fits = {}
    for key, label in (("a", "(a)  MNE loop, epoch resample (incl. read)"), ("a2", "(a') MNE loop, continuous resample"),
                       ("b", "(b)  udfs.preprocess loop, chunk rows"), ("b_samples", "(b') the same, per-sample rows"),
                       ("c", f"(c)  Spark job, {args.master}")):
        t1, t2 = (spark_t[n1], spark_t[n2]) if key == "c" else (loops[n1][key], loops[n2][key])
        fits[key] = fit(t1, t2, n1, n2)
        rows.append((label, t1, t2, *fits[key]))
    print()
    print(f"{'variant':46s} {'N=' + str(n1):>8s} {'N=' + str(n2):>8s} {'fixed s':>8s} {'s/subj':>8s}")
    for label, t1, t2, f, m in rows:
        print(f"{label:46s} {t1:8.2f} {t2:8.2f} {f:8.2f} {m:8.3f}")
    print(f"SparkSession start (excluded above): {session_s:.1f}s; rerun with nothing pending: {noop_s:.1f}s")
    print(f"pandas read share of (a): {loops[n2]['a_read'] / loops[n2]['a']:.0%}")

    ma, mb, (fc, mc) = fits["a"][1], fits["b"][1], fits["c"]
    print()
    print("ratios and targets")
    print(f"  (a)/(b) per subject:                 {ma / mb:6.2f}x   (target >= 3x)")
    print(f"  (a')/(b) per subject:                {fits['a2'][1] / mb:6.2f}x")
    print(f"  (c) fixed cost:                      {fc:6.2f}s   (target < 10 s)")
    print(f"  (c) marginal / ((b) / {par} cores):       {mc / (mb / par):6.2f}    (target <= 1.3)")
    print(f"  effective parallelism (b)/(c) marginal: {mb / mc:5.2f} of {par} cores")
    for n in (n1, 10, n2):
        ta, tc = fits["a"][0] + ma * n, fc + mc * n
        print(f"  N={n:<3d} (a) {ta:7.1f}s  (c) {tc:7.1f}s  (a)/(c) = {ta / tc:5.2f}x"
              f"{'   (target: (c) faster at N=10)' if n == 10 else ''}")
    print(f"# load average at end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
