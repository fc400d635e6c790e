"""How ingest and the preprocess job scale with cores: the same N subjects on local[c] for each c.

    python benchmarks/preprocess_scaling.py                      # c = 1, 2, 4, ... up to the cores here
    python benchmarks/preprocess_scaling.py --cores 1 4 16 --subjects 48
    python benchmarks/preprocess_scaling.py --quick              # validation: 1 min x 4 ch, 4 subjects
    python benchmarks/preprocess_scaling.py --jit tiered --set spark.driver_memory=16g   # as preprocess.py

Each core count runs in a fresh process (the child of benchmarks/preprocess.py: session start,
ingest, then the timed `preprocess()` and a rerun with nothing pending). Speedups are against the
smallest core count measured in the same run; efficiency is speedup / (c / c_min). "busy" is the
time spent inside the per-subject function summed over subjects, divided by (wall x c): the share
of the c task slots that did signal processing rather than waiting on Spark.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import preprocess as bench  # noqa: E402  (benchmarks/preprocess.py)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.cpu_count() or 1
    ap.add_argument("--cores", type=int, nargs="+", default=None,
                    help="core counts to run (default: 1, 2, 4, ... and this machine's count)")
    ap.add_argument("--subjects", type=int, default=None, help="subjects per run (default: 2 x the most cores)")
    ap.add_argument("--quick", action="store_true", help="tiny subjects, to validate the script")
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--channels", type=int, default=None)
    ap.add_argument("--sfreq", type=float, default=None)
    ap.add_argument("--workdir", default="/tmp/p300-bench-preprocess", help="data kept here between runs")
    bench.add_config_arguments(ap)
    args = ap.parse_args(argv)
    sets = bench.config_overrides(args)
    cores = sorted(set(args.cores or [c for c in (1, 2, 4, 8, 16, 32, 64) if c < here] + [here]))
    n = args.subjects or (4 if args.quick else 2 * max(cores))
    minutes = args.minutes or (1.0 if args.quick else 12.0)
    channels = args.channels or (4 if args.quick else 16)
    sfreq = args.sfreq or (256.0 if args.quick else 512.0)
    work = Path(args.workdir) / f"{n}x{minutes:g}m{channels}ch{sfreq:g}"
    print(f"# preprocess scaling: {n} subjects of {minutes:g} min x {channels} ch at {sfreq:g} Hz; "
          f"local[c] for c in {cores}; {here} cores here; {bench.describe_config(sets)}; "
          f"load average at start {bench.load_average()}", flush=True)
    files = bench.generate(work / "landing", n, minutes, channels, sfreq)

    rows = []
    for c in cores:
        r = bench.run_child(work / f"root_c{c}", files, f"local[{c}]", sets)
        rows.append((c, r))
        print(f"# local[{c}]: session {r['session_s']:.1f}s, ingest {r['ingest_s']:.2f}s, "
              f"preprocess {r['preprocess_s']:.2f}s ({r['epochs']} epochs; stages "
              + ", ".join(f"{k} {v:.2f}s" for k, v in r["stages"].items())
              + f"), in the function {r['udf_s']:.2f}s, rerun {r['noop_s']:.2f}s", flush=True)

    c0, r0 = rows[0]
    print()
    print(f"{'master':>10s} {'ingest s':>9s} {'x':>6s} {'eff':>5s} {'preproc s':>10s} {'x':>6s} {'eff':>5s} "
          f"{'subj/s':>7s} {'busy':>5s}")
    for c, r in rows:
        si, sp = r0["ingest_s"] / r["ingest_s"], r0["preprocess_s"] / r["preprocess_s"]
        print(f"{f'local[{c}]':>10s} {r['ingest_s']:9.2f} {si:6.2f} {si / (c / c0):5.0%} {r['preprocess_s']:10.2f} "
              f"{sp:6.2f} {sp / (c / c0):5.0%} {n / r['preprocess_s']:7.2f} {r['udf_s'] / (r['preprocess_s'] * c):5.0%}")
    print(f"(x: speedup against local[{c0}] in this run; eff: x / (c / {c0}))")
    print(f"# load average at end {bench.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
