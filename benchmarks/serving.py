"""Serving latency and throughput: the local endpoint server vs `mlflow models serve`.

Both serve the same registered model version (P300Model: scaler + shrinkage LDA, tensor
signature float32 (-1, channels x 71)) on 127.0.0.1, each in one process, and both get
the same request bytes: a batch of epochs as ``inputs`` and as ``dataframe_split``.
Prints, from one run: p50 and p99 latency and epochs per second of sequential requests
per server and format; epochs per second with concurrent clients (threads with their
own keep-alive connection, on the same cores as the servers); and the ratios
(mlflow / local for latency, local / mlflow for throughput) with its targets.

    .venv/bin/python benchmarks/serving.py            # full: 100 epochs, 300 requests, 4 clients x 15 s
    .venv/bin/python benchmarks/serving.py --quick    # tiny sizes, to check that it runs
    .venv/bin/python benchmarks/serving.py --classifiers lda,xdawn_ts   # local endpoint, p50 per classifier
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from pipeline import registry as reg
from pipeline.config import Config, load_config
from pipeline.model import P300Model, build_estimator, model_signature
from pipeline.model_code import model_code_paths
from pipeline.report import format_table
from pipeline.serving import apply_served_versions, invocation_url, start_local_server, stop_local_server, \
    workspace_client


def synthetic(n: int, n_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 1 / 6, 2, 1)
    X = (rng.normal(size=(n, n_features)) * 8).astype(np.float32)
    X[y == 2, n_features // 3: n_features // 2] += 3.0
    return X, y


def register(cfg: Config, n_features: int) -> str:
    from importlib.metadata import version

    import mlflow

    client = reg.mlflow_client(cfg)
    exp = reg.ensure_experiment(client, cfg, cfg.registry.experiment)
    X, y = synthetic(600, n_features, seed=0)
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pyfunc.log_model(name="model", python_model=P300Model(build_estimator().fit(X, y), n_features),
                                       code_paths=model_code_paths(), signature=model_signature(n_features),
                                       input_example=X[:2], registered_model_name=cfg.registry.model_name,
                                       pip_requirements=[f"{p}=={version(p)}" for p in
                                                         ("mlflow", "scikit-learn", "numpy", "pandas")])
    return str(info.registered_model_version)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP/1.1 connection (http.client: the least client overhead)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.path = parts.path
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        self.headers = {"Content-Type": "application/json", **headers}

    def post(self, body: bytes) -> tuple[int, bytes]:
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        self.conn.close()


def sequential_times(url: str, headers: dict[str, str], body: bytes, n: int) -> list[float]:
    """Seconds of each of n sequential requests on one connection, after 3 warm-ups."""
    client = Client(url, headers)
    try:
        for _ in range(3):  # warm-up
            status, data = client.post(body)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {data[:300].decode(errors='replace')}")
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            status, data = client.post(body)
            times.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {data[:300].decode(errors='replace')}")
    finally:
        client.close()
    return times


def sequential(url: str, headers: dict[str, str], body: bytes, n: int, epochs: int) -> dict[str, float]:
    try:
        times = sequential_times(url, headers, body, n)
    except RuntimeError as exc:
        return {"error": str(exc)}
    ms = np.asarray(times) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "eps": epochs * len(times) / float(np.sum(times))}


def concurrent(url: str, headers: dict[str, str], body: bytes, clients: int, seconds: float,
               epochs: int) -> dict[str, float]:
    done, failed = [0] * clients, [0] * clients
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        client = Client(url, headers)
        client.post(body)
        start.wait()
        while time.perf_counter() < stop_at[0]:
            status, _ = client.post(body)
            if status == 200:
                done[i] += 1
            else:
                failed[i] += 1
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 1e9
    start.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"eps": sum(done) * epochs / elapsed, "requests": sum(done), "failed": sum(failed)}


def start_mlflow_serve(cfg: Config, version: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking_uri, "MLFLOW_REGISTRY_URI": cfg.registry_uri,
           # it runs `uvicorn` from PATH: the one beside this interpreter
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{cfg.registry.model_name}/{version}",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError("mlflow models serve did not answer /ping within 240 s")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the uvicorn worker goes too
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def predictions(url: str, headers: dict[str, str], body: bytes) -> np.ndarray:
    status, data = Client(url, headers).post(body)
    if status != 200:
        return np.array([])
    return np.array([p["probability"] for p in json.loads(data)["predictions"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the benchmark runs")
    parser.add_argument("--epochs", type=int, default=100, help="epochs per request (default 100)")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per server and format")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for the throughput run")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each throughput run")
    parser.add_argument("--channels", type=int, default=16, help="EEG channels (features = channels x 71)")
    parser.add_argument("--inference-log", action="store_true",
                        help="instead: the local endpoint with the inference log on vs off (benchmarks/inference_log_ab.py)")
    parser.add_argument("--log-max-payload-kb", type=int, default=None, help="with --inference-log: monitoring.max_payload_kb")
    parser.add_argument("--classifiers", default=None, metavar="A,B",
                        help="instead: the local endpoint serving each classifier in turn, p50 ratio to the first "
                             "(benchmarks/serving_classifiers.py)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.requests, args.seconds, args.channels = 20, 10, 1.0, 4
    if args.inference_log:
        from inference_log_ab import run

        return run(args, register, synthetic, sequential_times, concurrent)
    if args.classifiers:
        from serving_classifiers import run as run_classifiers

        return run_classifiers(args, synthetic, sequential)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="p300-serving-bench-") as tmp:
        cfg = load_config(root=str(Path(tmp) / "lakehouse"), env={},
                          overrides={"serving.endpoint_name": "bench", "serving.max_body_mb": "256"})
        n_features = args.channels * cfg.preprocess.n_times
        print(f"model: P300Model, {n_features} features ({args.channels} channels x {cfg.preprocess.n_times}); "
              f"{args.epochs} epochs per request; {os.cpu_count()} cores, load average {load0[0]:.2f}",
              file=sys.stderr)
        version = register(cfg, n_features)
        X, _ = synthetic(args.epochs, n_features, seed=1)
        rows = X.tolist()
        columns = [f"f{i}" for i in range(n_features)]
        bodies = {"inputs": json.dumps({"inputs": rows}).encode(),
                  "dataframe_split": json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()}
        print(f"request bodies: inputs {len(bodies['inputs']) / 1e6:.2f} MB, dataframe_split "
              f"{len(bodies['dataframe_split']) / 1e6:.2f} MB", file=sys.stderr)
        mlflow_proc = None
        try:
            start_local_server(cfg)
            ws = workspace_client(cfg)
            apply_served_versions(ws, cfg, {"challenger": version})
            headers = dict(ws.config.authenticate())
            servers = {"local endpoint": (invocation_url(ws, cfg, "challenger"), headers)}
            port = free_port()
            mlflow_proc = start_mlflow_serve(cfg, version, port, Path(tmp) / "mlflow-serve.log")
            servers["mlflow models serve"] = (f"http://127.0.0.1:{port}/invocations", {})

            ref = predictions(*servers["local endpoint"], bodies["inputs"])
            for server, (url, hdrs) in servers.items():
                for fmt, body in bodies.items():
                    got = predictions(url, hdrs, body)
                    same = got.shape == ref.shape and np.allclose(got, ref, rtol=1e-5)
                    print(f"check {server} / {fmt}: {'same predictions' if same else 'DIFFERENT or failed'}",
                          file=sys.stderr)

            results: dict[tuple[str, str], dict[str, float]] = {}
            for server, (url, hdrs) in servers.items():
                for fmt, body in bodies.items():
                    print(f"sequential: {server} / {fmt} ...", file=sys.stderr)
                    results[(server, fmt)] = sequential(url, hdrs, body, args.requests, args.epochs)
            throughput = {}
            for server, (url, hdrs) in servers.items():
                print(f"throughput: {server} / inputs, {args.clients} clients x {args.seconds:g}s ...",
                      file=sys.stderr)
                throughput[server] = concurrent(url, hdrs, bodies["inputs"], args.clients, args.seconds, args.epochs)
        finally:
            if mlflow_proc is not None:
                stop_process(mlflow_proc)
            stop_local_server(cfg)

    rows_out = []
    for (server, fmt), r in results.items():
        if "error" in r:
            rows_out.append((server, fmt, r["error"][:60], "", ""))
        else:
            rows_out.append((server, fmt, f"{r['p50']:.1f}", f"{r['p99']:.1f}", f"{r['eps']:.0f}"))
    for server, t in throughput.items():
        rows_out.append((server, f"inputs, {args.clients} clients", "", "", f"{t['eps']:.0f}"
                         + (f" ({t['failed']} failed)" if t["failed"] else "")))
    print(format_table(rows_out, ["server", "request", "p50 ms", "p99 ms", "epochs/s"]))

    def ratio(fmt: str) -> float | None:
        a, b = results[("mlflow models serve", fmt)], results[("local endpoint", fmt)]
        return a["p50"] / b["p50"] if "p50" in a and "p50" in b else None

    local_inputs = results[("local endpoint", "inputs")].get("p50", float("nan"))
    r_inputs, r_split = ratio("inputs"), ratio("dataframe_split")
    eps = throughput["local endpoint"]["eps"]
    eps_ratio = eps / throughput["mlflow models serve"]["eps"] if throughput["mlflow models serve"]["eps"] else None
    fmt_ratio = (lambda r: f"{r:.1f}x" if r is not None else "n/a")
    print()
    print(f"p50 latency, mlflow / local: inputs {fmt_ratio(r_inputs)}, dataframe_split {fmt_ratio(r_split)}; "
          f"throughput local / mlflow: {fmt_ratio(eps_ratio)}")
    if not args.quick:
        print("targets: "
              f"local p50 inputs <= 15 ms: {'met' if local_inputs <= 15 else 'MISSED'} ({local_inputs:.1f}); "
              f"inputs >= 4x: {'met' if r_inputs and r_inputs >= 4 else 'MISSED'}; "
              f"dataframe_split >= 10x: {'met' if r_split and r_split >= 10 else 'MISSED'}; "
              f">= 10000 epochs/s with {args.clients} clients: {'met' if eps >= 10000 else 'MISSED'} ({eps:.0f})")
    load1 = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores; load average {load0[0]:.2f} before, {load1[0]:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
