"""Serving with the inference log on vs off: the same model on two local endpoint servers,
measured in one run, alternating rounds so that the shared machine's load falls on both.

Run through ``benchmarks/serving.py --inference-log`` (same sizes and clients as the serving
benchmark). Prints p50/p99 of sequential requests, epochs per second with concurrent
clients, the on/off ratios against a 10% target, and the rows the log committed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.report import format_table
from pipeline.serving.inference_wal import WAL_DIR
from pipeline.serving import apply_served_versions, invocation_url, start_local_server, stop_local_server, \
    workspace_client


def _committer_pid(wal: Path) -> int:
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pipeline.serving.inference_commit" in cmd and str(wal).encode() in cmd:
            return int(proc.name)
    raise RuntimeError(f"no committer process for {wal}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _logged_rows(table: str) -> int:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(table).to_pyarrow_dataset().count_rows()
    except TableNotFoundError:
        return 0


def _catch_up_s(table: str, rows: int, pid: int) -> float:
    """Waits until the log has committed ``rows`` rows and returns the CPU seconds the
    committer spent meanwhile, spread over the machine's cores: the share of capacity that
    work takes from requests when it runs beside them instead of after them. The wait for
    the flush timer is not counted."""
    cpu0 = _cpu_s(pid)
    while _logged_rows(table) < rows:
        time.sleep(0.05)
    return (_cpu_s(pid) - cpu0) / (os.cpu_count() or 1)


def run(args: argparse.Namespace, register, synthetic, sequential_times, concurrent) -> int:
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="p300-ilog-bench-") as tmp:
        cap = {"monitoring.max_payload_kb": str(args.log_max_payload_kb)} if args.log_max_payload_kb is not None else {}
        cfgs = {mode: load_config(root=str(Path(tmp) / mode), env={}, overrides={
            "serving.endpoint_name": "bench", "serving.max_body_mb": "256",
            "monitoring.inference_log": str(mode == "on").lower(), **cap}) for mode in ("off", "on")}
        n_features = args.channels * cfgs["on"].preprocess.n_times
        X, _ = synthetic(args.epochs, n_features, seed=1)
        body = json.dumps({"inputs": X.tolist()}).encode()
        print(f"inference log A/B: {args.epochs} epochs x {n_features} features per request "
              f"({len(body) / 1e6:.2f} MB); request bodies logged: "
              f"{'all' if not cap else f'up to {args.log_max_payload_kb} KB'}; {os.cpu_count()} cores, "
              f"load average {load0[0]:.2f}", file=sys.stderr)
        urls = {}
        try:
            for mode, cfg in cfgs.items():
                version = register(cfg, n_features)
                start_local_server(cfg)
                ws = workspace_client(cfg)
                apply_served_versions(ws, cfg, {"champion": version})
                urls[mode] = (invocation_url(ws, cfg), dict(ws.config.authenticate()))
            times = {m: [] for m in cfgs}
            done = {m: [0, 0.0] for m in cfgs}  # requests, seconds of the concurrent runs (+ the log's catch-up)
            rounds = 2 if args.quick else 8
            wal = cfgs["on"].serving_dir / WAL_DIR
            committer = _committer_pid(wal)
            invocations = 0  # of the 'on' server: every one is logged
            charged = 0.0  # seconds of the committer's catch-up charged to 'on'
            for r in range(rounds):  # off, on, on, off, ...: drifting machine load hits both
                for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                    url, hdrs = urls[mode]
                    n_seq = max(1, args.requests // rounds)
                    times[mode] += sequential_times(url, hdrs, body, n_seq)
                    t = concurrent(url, hdrs, body, args.clients, 2 * args.seconds / rounds, args.epochs)
                    done[mode][0] += t["requests"]
                    if mode == "on":  # 3 and 1 per client are warm-ups
                        invocations += 3 + n_seq + args.clients + t["requests"] + t["failed"]
                    # the committer (nice 10) lags under saturation: the work it does afterwards
                    # for this run's requests counts against 'on', and the next run starts clean
                    done[mode][1] += 2 * args.seconds / rounds
                    if mode == "on":
                        charged += _catch_up_s(cfgs["on"].table("inference_log"), invocations, committer)
                print(f"round {r + 1}/{rounds} done", file=sys.stderr)
        finally:
            for cfg in cfgs.values():
                stop_local_server(cfg)  # a clean stop commits the log's last segment
        from deltalake import DeltaTable

        logged = DeltaTable(cfgs["on"].table("inference_log")).to_pyarrow_dataset().count_rows()
    stats = {}
    for mode in cfgs:
        ms = np.asarray(times[mode]) * 1000
        stats[mode] = {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                       "eps": done[mode][0] * args.epochs / (done[mode][1] + (charged if mode == "on" else 0.0))}
    print(format_table([(m, f"{s['p50']:.1f}", f"{s['p99']:.1f}", f"{s['eps']:.0f}") for m, s in stats.items()],
                       ["inference log", "p50 ms", "p99 ms", f"epochs/s ({args.clients} clients)"]))
    p50 = stats["on"]["p50"] / stats["off"]["p50"]
    eps = stats["on"]["eps"] / stats["off"]["eps"]
    during = done["on"][0] / done["on"][1] / (done["off"][0] / done["off"][1])
    print(f"\non / off: p50 {p50:.3f}x, throughput {eps:.3f}x; target within 10%: "
          f"p50 {'met' if p50 <= 1.10 else 'MISSED'}, throughput {'met' if eps >= 0.90 else 'MISSED'}")
    print(f"throughput during the runs alone {during:.3f}x; the committer's catch-up charged to 'on': {charged:.1f} s "
          f"over {done['on'][1]:.0f} s of runs")
    print(f"inference_log rows committed by the 'on' server: {logged}; request bodies logged: "
          f"{'all' if args.log_max_payload_kb is None else f'up to {args.log_max_payload_kb} KB (larger: null)'}")
    load1 = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores; load average {load0[0]:.2f} before, {load1[0]:.2f} after")
    return 0
