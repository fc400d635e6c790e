"""Training on the driver: time, peak driver memory and cross-validated metrics.

    python benchmarks/train.py            # 10 subjects, 12 min, 16 channels, 512 Hz
    python benchmarks/train.py --quick    # 3 subjects, 2 min, 8 channels, 256 Hz (validation)

Builds (once, cached under --root) a features table from synthetic subjects through
the real preprocessing, in a child process so the measured process holds only what
training needs. Then, in this process: the features transfer through Arrow (what
`p300 train` does) against the baseline `toPandas()` + `np.stack` of the same rows,
each timed without tracing and measured with tracemalloc + Arrow's pool in a second
pass; then one full `p300 train` (CV, fit, MLflow logging, registration) on a fresh
MLflow store. Prints ratios against the baseline and the driver's peak memory: the
Python process's peak RSS and the Spark driver JVM's (both are "the driver").
"""
from __future__ import annotations

import argparse
import gc
import resource
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
    import pandas as pd

    from pipeline.spark import get_spark
    from pipeline.synth import synth_subject
    from udfs.preprocess import Settings, preprocess_subject

    cfg = _cfg(root)
    spark = get_spark(cfg)
    settings = Settings.from_config(cfg, sfreq)
    from pyspark.sql import types as T

    schema = T.StructType([
        T.StructField("subject_id", T.IntegerType()), T.StructField("epoch_idx", T.IntegerType()),
        T.StructField("event_sample", T.LongType()), T.StructField("label", T.IntegerType()),
        T.StructField("features", T.ArrayType(T.FloatType()))])
    for sid in range(1, subjects + 1):
        t0 = time.perf_counter()
        raw = synth_subject(sid, minutes=minutes, n_channels=channels, sfreq=sfreq, seed=0)
        raw.insert(0, "subject_id", np.int32(sid))
        raw.insert(1, "sample_idx", np.arange(len(raw), dtype=np.int64))
        feats = preprocess_subject(raw, settings)[[f.name for f in schema.fields]]
        feats = pd.DataFrame({**{c: feats[c] for c in feats.columns if c != "features"},
                              "features": [np.asarray(v, np.float32).tolist() for v in feats["features"]]})
        spark.createDataFrame(feats, schema).write.format("delta").mode("append") \
            .partitionBy("subject_id").save(cfg.table("features"))
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


def _baseline_load(spark, cfg, subjects, version):
    """What the issue rules out: pandas objects per row, then a stack."""
    from pipeline.storage import read_table

    pdf = (read_table(spark, cfg, "features", version=version).where(f"subject_id IN ({','.join(map(str, subjects))})")
           .select("subject_id", "epoch_idx", "label", "features").orderBy("subject_id", "epoch_idx").toPandas())
    X = np.stack(pdf["features"].to_numpy()).astype(np.float32)
    return X, pdf["label"].to_numpy()


def _measure(fn, repeat: int = 3):
    """(best seconds untraced, peak traced MiB incl. Arrow's pool, result)."""
    import pyarrow as pa

    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        del out
    gc.collect()
    pool = pa.default_memory_pool()
    pool.release_unused()
    arrow_before = pool.max_memory() or 0
    tracemalloc.start()
    out = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrow_peak = max((pool.max_memory() or 0) - arrow_before, 0)
    return best, (peak + arrow_peak) / 2**20, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for validating the script")
    ap.add_argument("--root", type=Path, default=None, help="where the cached features table lives")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--subjects", type=int, default=None)
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
    from pipeline.train import feature_subjects, load_features, train

    spark = get_spark(cfg)
    version = table_version(spark, cfg, "features")
    ids = feature_subjects(spark, cfg, version)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{len(ids)} subjects ({minutes:g} min, {channels} ch, {sfreq:g} Hz), features table version {version}; "
          f"driver Python RSS before loading: {rss0:.0f} MiB")

    t_arrow, m_arrow, data = _measure(lambda: load_features(spark, cfg, ids, version))
    X = data.X
    print(f"matrix: {X.shape[0]} epochs x {X.shape[1]} features = {X.nbytes / 2**20:.1f} MiB float32")
    t_base, m_base, (Xb, _) = _measure(lambda: _baseline_load(spark, cfg, ids, version))
    assert np.array_equal(Xb, X), "baseline and Arrow path disagree"
    del Xb, data
    print("\nfeatures to the driver      seconds   peak MiB (tracemalloc + Arrow pool)")
    print(f"  toPandas + np.stack (base)  {t_base:7.2f}   {m_base:8.1f}")
    print(f"  Arrow flat fill (train)     {t_arrow:7.2f}   {m_arrow:8.1f}")
    print(f"  ratio base/arrow            {t_base / t_arrow:7.2f}x  {m_base / m_arrow:8.2f}x")

    shutil.rmtree(root / "mlflow", ignore_errors=True)
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    result = train(spark, cfg, fraction=1.0, force=True, rep=Reporter())
    total = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    jvm = _jvm_peak_mib(spark)
    m = result.metrics
    print(f"\np300 train on {len(result.subjects)} subjects (all; leave-subjects-out CV, "
          f"{cfg.training.cv_folds} folds): {total:.1f}s end to end (tracemalloc on)")
    print(f"  cross-validation {m.get('cv_seconds', float('nan')):.1f}s, final fit {m.get('fit_seconds', float('nan')):.1f}s")
    print(f"  CV ROC AUC {m['cv_roc_auc']:.3f} (folds {m.get('cv_roc_auc_fold_mean', float('nan')):.3f} "
          f"+- {m.get('cv_roc_auc_fold_std', float('nan')):.3f}), balanced accuracy {m['cv_balanced_accuracy']:.3f}, "
          f"F1 Target {m['cv_f1_target']:.3f}")
    print(f"  peak traced Python/numpy memory during train: {traced_peak / 2**20:.1f} MiB")
    print(f"  driver peak RSS: Python {rss:.0f} MiB (of which {rss0:.0f} before loading)"
          + (f", Spark driver JVM {jvm:.0f} MiB" if jvm else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
