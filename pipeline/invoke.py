"""Batched, bounded-concurrency requests to a served model's invocation URL.

Retries 429, 503 and connection errors with exponential backoff and jitter, with a
timeout per request. A batch that still fails is recorded (index, reason) and its
epochs are reported as unscored: never silently skipped.
"""
from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import httpx
import numpy as np

try:  # 15x faster than json for a float matrix, and half the bytes on the wire
    import orjson

    def _encode(rows: np.ndarray) -> bytes:
        return orjson.dumps({"inputs": rows}, option=orjson.OPT_SERIALIZE_NUMPY)
except ImportError:  # pragma: no cover - orjson is a pinned requirement
    def _encode(rows: np.ndarray) -> bytes:
        return json.dumps({"inputs": rows.tolist()}).encode()

__all__ = ["InvocationResult", "invoke_batches", "RETRY_STATUS"]

RETRY_STATUS = frozenset({429, 503})


@dataclass
class InvocationResult:
    """Per-epoch results (NaN probability / label 0 where the batch failed) and request stats."""

    probability: np.ndarray
    label: np.ndarray
    latencies_s: list[float] = field(default_factory=list)
    failed_batches: list[tuple[int, str]] = field(default_factory=list)
    retries: int = 0
    wall_s: float = 0.0

    @property
    def scored(self) -> np.ndarray:
        return ~np.isnan(self.probability)

    @property
    def failed_epochs(self) -> int:
        return int((~self.scored).sum())

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies_s) * 1000, q)) if self.latencies_s else float("nan")

    @property
    def epochs_per_s(self) -> float:
        return float(self.scored.sum() / self.wall_s) if self.wall_s > 0 else 0.0


def _parse(body: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    preds = json.loads(body)["predictions"]
    if len(preds) != n:
        raise ValueError(f"expected {n} predictions, got {len(preds)}")
    if preds and isinstance(preds[0], dict):
        return (np.array([p["probability"] for p in preds], dtype=np.float64),
                np.array([p["label"] for p in preds], dtype=np.int64))
    raise ValueError(f"unexpected prediction format: {str(preds[:1])[:200]}")


def invoke_batches(
    url: str,
    matrix: np.ndarray,
    headers: dict[str, str] | None = None,
    batch_size: int = 64,
    concurrency: int = 4,
    retries: int = 5,
    timeout_s: float = 30.0,
    backoff_s: float = 0.2,
    progress: Callable[[int, int], None] | None = None,
) -> InvocationResult:
    """POST ``{"inputs": rows}`` batches of ``matrix`` to ``url``; results keep the row order."""
    n = len(matrix)
    result = InvocationResult(np.full(n, np.nan), np.zeros(n, dtype=np.int64))
    starts = list(range(0, n, batch_size))
    lock = threading.Lock()
    done = [0]
    hdrs = {"Content-Type": "application/json", **(headers or {})}

    def one(client: httpx.Client, index: int, start: int) -> None:
        rows = matrix[start:start + batch_size]
        body = _encode(np.ascontiguousarray(rows))
        reason = ""
        for attempt in range(retries + 1):
            t0 = time.perf_counter()
            try:
                resp = client.post(url, content=body, headers=hdrs, timeout=timeout_s)
                elapsed = time.perf_counter() - t0
                if resp.status_code == 200:
                    proba, label = _parse(resp.content, len(rows))
                    with lock:
                        result.probability[start:start + len(rows)] = proba
                        result.label[start:start + len(rows)] = label
                        result.latencies_s.append(elapsed)
                    return
                reason = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code not in RETRY_STATUS:
                    break
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except (ValueError, KeyError, TypeError) as exc:
                reason = f"bad response: {exc}"
                break
            if attempt < retries:
                with lock:
                    result.retries += 1
                time.sleep(backoff_s * (2**attempt) * (0.5 + random.random()))
        with lock:
            result.failed_batches.append((index, reason))

    def run(index: int, start: int, client: httpx.Client) -> None:
        one(client, index, start)
        with lock:
            done[0] += 1
            if progress:
                progress(done[0], len(starts))

    t_start = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda args: run(args[0], args[1], client), enumerate(starts)))
    result.wall_s = time.perf_counter() - t_start
    result.failed_batches.sort()
    return result
