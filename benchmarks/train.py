"""Training on the driver: time, peak driver memory and cross-validated metrics.

    python benchmarks/train.py            # 10 subjects, 12 min, 16 channels, 512 Hz
    python benchmarks/train.py --quick    # 3 subjects, 2 min, 8 channels, 256 Hz (validation)
    python benchmarks/train.py --classifiers lda,xdawn_ts   # train time of each, ratio to the first

Builds (once, cached under --root) a features table from synthetic subjects through
the real preprocessing, in a child process so the measured process holds only what
training needs. Then, in this process: the features transfer the way `p300 train` does
it (Arrow batches copied into one float32 matrix) against the baseline it rules
out (`collect()` of Rows) and against `toPandas()` + `np.stack`, each timed (best of 3;
the baseline once) with its peak RSS growth measured in a second pass (Linux VmHWM,
reset before each); then `p300 train` on all subjects (CV, fit, MLflow logging,
registration) on a fresh MLflow store, timed with its peak RSS, and once more under
tracemalloc. Prints ratios against the baseline and the driver's peak memory: the
Python process and the Spark driver JVM (in local mode both are the driver).
"""
from __future__ import annotations

import argparse
import gc
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import Config, load_config  # noqa: E402


def _cfg(root: Path) -> Config:
    return load_config(root=str(root), env={}, overrides={"spark.master": "local[2]", "spark.shuffle_partitions": "2"})


def build(root: Path, subjects: int, minutes: float, channels: int, sfreq: float) -> None:
    """Synthetic subjects -> udfs.preprocess -> features Delta table (child process)."""
    from pipeline.spark import get_spark
    from pipeline.synth import synth_subject
    from udfs.preprocess import Settings, preprocess_subject

    cfg = _cfg(root)
    spark = get_spark(cfg)
    settings = Settings.from_config(cfg, sfreq)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from synth_features import write_features  # the test suite's Arrow writer of features frames

    for sid in range(1, subjects + 1):
        t0 = time.perf_counter()
        raw = synth_subject(sid, minutes=minutes, n_channels=channels, sfreq=sfreq, seed=0)
        raw.insert(0, "subject_id", np.int32(sid))
        raw.insert(1, "sample_idx", np.arange(len(raw), dtype=np.int64))
        feats = preprocess_subject(raw, settings)
        write_features(spark, cfg, feats)
        print(f"  built subject {sid}: {len(feats)} epochs in {time.perf_counter() - t0:.1f}s", flush=True)


def _jvm_peak_mib(spark) -> float | None:
    try:
        pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except Exception:
        return None
    return None


def _query(spark, cfg, subjects, version):
    from pipeline.storage import read_table

    return (read_table(spark, cfg, "features", version=version)
            .where(f"subject_id IN ({','.join(map(str, subjects))})")
            .select("subject_id", "epoch_idx", "label", "features").orderBy("subject_id", "epoch_idx"))


def _rows_load(spark, cfg, subjects, version):
    """The baseline ruled out: Python Rows holding lists of Python floats."""
    rows = _query(spark, cfg, subjects, version).collect()
    return np.array([r["features"] for r in rows], dtype=np.float32)


def _pandas_load(spark, cfg, subjects, version):
    """toPandas (Arrow-backed, one ndarray object per epoch), then a stack."""
    pdf = _query(spark, cfg, subjects, version).toPandas()
    return np.stack(pdf["features"].to_numpy()).astype(np.float32, copy=False)


def _rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) of this process, in MiB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM, so each step's own peak can be read."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _measure(fn, repeat: int = 3):
    """(best seconds, peak RSS growth in MiB during one call, result). RSS covers everything
    the call allocates in this process: Arrow buffers, NumPy arrays, Python objects."""
    import pyarrow as pa

    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        del out
    gc.collect()
    pa.default_memory_pool().release_unused()
    _reset_peak_rss()
    before, _ = _rss_mib()
    out = fn()
    _, peak = _rss_mib()
    return best, peak - before, out


def compare_training(spark, cfg: Config, classifiers: list[str], root: Path) -> int:
    """`p300 train` on all subjects with each classifier, same table, same process: the
    first is the baseline (best of 2 each, fresh MLflow store per run)."""
    from pipeline.report import Reporter
    from pipeline.train import train

    seconds = {}
    for name in classifiers:
        best = float("inf")
        for k in range(2):
            # a fresh store per run, under a new path: MLflow keeps its SQLite engine per URI for the
            # process, so a store deleted under a URI already used reads as a read-only database
            store = root / f"mlflow-bench-{name}-{k}"
            shutil.rmtree(store, ignore_errors=True)
            c = cfg.model_copy(update={
                "training": cfg.training.model_copy(update={"classifier": name}),
                "registry": cfg.registry.model_copy(update={"tracking_uri": f"sqlite:///{store}/mlflow.db"})})
            store.mkdir(parents=True)
            t0 = time.perf_counter()
            result = train(spark, c, fraction=1.0, force=True, rep=Reporter(quiet=True))
            best = min(best, time.perf_counter() - t0)
        seconds[name] = best
        print(f"  {name:<10} {best:6.1f}s end to end (CV {result.metrics['cv_seconds']:.1f}s, final fit "
              f"{result.metrics['fit_seconds']:.1f}s), CV ROC AUC {result.metrics['cv_roc_auc']:.3f}", flush=True)
    base = classifiers[0]
    for name in classifiers[1:]:
        print(f"train time {name} / {base}: {seconds[name] / seconds[base]:.2f}x")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for validating the script")
    ap.add_argument("--root", type=Path, default=None, help="where the cached features table lives")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--subjects", type=int, default=None)
    ap.add_argument("--classifiers", default=None, metavar="A,B",
                    help="only time `p300 train` with each classifier (the first is the baseline) and print ratios")
    args = ap.parse_args()
    subjects, minutes, channels, sfreq = (3, 2.0, 8, 256.0) if args.quick else (10, 12.0, 16, 512.0)
    subjects = args.subjects or subjects
    root = args.root or Path(f"/tmp/p300-bench-train-{subjects}x{minutes:g}m-{channels}ch-{sfreq:g}hz")
    cfg = _cfg(root)

    if args.build_only:
        build(root, subjects, minutes, channels, sfreq)
        return 0
    if not (root / "delta" / "features" / "_delta_log").exists():
        print(f"building the features table under {root} (child process) ...", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, __file__, "--build-only", "--root", str(root), "--subjects", str(subjects)]
                       + (["--quick"] if args.quick else []), check=True)

    from pipeline.report import Reporter
    from pipeline.spark import get_spark
    from pipeline.storage import table_version
    from pipeline.tables import feature_subjects, load_features
    from pipeline.train import train

    spark = get_spark(cfg)
    if args.classifiers:
        return compare_training(spark, cfg, args.classifiers.split(","), root)
    version = table_version(spark, cfg, "features")
    ids = feature_subjects(spark, cfg, version)
    rss0, _ = _rss_mib()
    print(f"\n{len(ids)} subjects ({minutes:g} min, {channels} ch, {sfreq:g} Hz), features table version {version}; "
          f"driver Python RSS before loading: {rss0:.0f} MiB")

    t_arrow, m_arrow, data = _measure(lambda: load_features(spark, cfg, ids, version))
    X = data.X
    del data
    print(f"matrix: {X.shape[0]} epochs x {X.shape[1]} features = {X.nbytes / 2**20:.1f} MiB float32")
    rows = [("collect() Rows (baseline)", *_measure(lambda: _rows_load(spark, cfg, ids, version), repeat=1)),
            ("toPandas + np.stack", *_measure(lambda: _pandas_load(spark, cfg, ids, version))),
            ("Arrow flat fill (p300 train)", t_arrow, m_arrow, X)]
    t_base, m_base = rows[0][1], rows[0][2]
    print("\nfeatures to the driver          seconds  peak RSS growth MiB  time vs baseline  memory vs baseline")
    for name, t, m, out in rows:
        assert np.array_equal(out, X), f"{name} disagrees with the Arrow path"
        print(f"  {name:<30} {t:6.2f}  {m:12.1f}         {t_base / t:8.1f}x faster  {m_base / max(m, 0.1):8.1f}x less")
    del rows

    shutil.rmtree(root / "mlflow", ignore_errors=True)
    del X
    gc.collect()
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    reset = _reset_peak_rss()
    rss_before, _ = _rss_mib()
    t0 = time.perf_counter()
    result = train(spark, cfg, fraction=1.0, force=True, rep=Reporter())
    total = time.perf_counter() - t0
    _, rss_peak = _rss_mib()
    gc.collect()
    tracemalloc.start()
    train(spark, cfg, fraction=1.0, force=True, rep=Reporter(quiet=True))
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    jvm = _jvm_peak_mib(spark)
    m = result.metrics
    print(f"\np300 train on {len(result.subjects)} subjects (all; leave-subjects-out CV, "
          f"{cfg.training.cv_folds} folds): {total:.1f}s end to end")
    print(f"  cross-validation {m.get('cv_seconds', float('nan')):.1f}s, final fit {m.get('fit_seconds', float('nan')):.1f}s")
    print(f"  CV ROC AUC {m['cv_roc_auc']:.3f} (folds {m.get('cv_roc_auc_fold_mean', float('nan')):.3f} "
          f"+- {m.get('cv_roc_auc_fold_std', float('nan')):.3f}), balanced accuracy {m['cv_balanced_accuracy']:.3f}, "
          f"F1 Target {m['cv_f1_target']:.3f}")
    print(f"  driver Python process during train: peak RSS {rss_peak:.0f} MiB, {rss_peak - rss_before:.0f} MiB above "
          f"its {rss_before:.0f} MiB before" + ("" if reset else " (peak not resettable here: process lifetime)"))
    print(f"  peak traced Python/NumPy allocations during train (tracemalloc, second run): {traced_peak / 2**20:.1f} MiB")
    if jvm:
        print(f"  Spark driver JVM (local mode: driver and executors) peak RSS over the whole run: {jvm:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
