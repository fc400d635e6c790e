"""Batched, bounded-concurrency requests to a served model's invocation URL.

Retries (tenacity): 429, 503, 504 and connection errors, with exponential backoff and
full jitter, at most ``retries`` times per batch, each request with its own timeout. An
answer that carries ``Retry-After`` is waited out for as long as it asks (urllib3's parser:
seconds or an HTTP date); while within ``cold_start_window_s`` of the batch's first
attempt such waits do not count as retries, so an endpoint that scales up from zero is
waited for, not failed. A batch that still fails is recorded (index, reason) and its
epochs are reported as unscored: never silently skipped.

Each body is ``{"inputs": rows}``, plus ``"params": {...}`` when given (handed to the
served model's ``predict(..., params=...)``; see docs/serving.md).
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import numpy as np
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential
from urllib3.exceptions import InvalidHeader
from urllib3.util import Retry

try:  # 15x faster than json for a float matrix, and half the bytes on the wire
    import orjson

    def _encode(rows: np.ndarray, params: dict[str, Any] | None) -> bytes:
        body: dict[str, Any] = {"inputs": rows} if params is None else {"inputs": rows, "params": params}
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
except ImportError:  # pragma: no cover - orjson is a pinned requirement
    def _encode(rows: np.ndarray, params: dict[str, Any] | None) -> bytes:
        body: dict[str, Any] = {"inputs": rows.tolist()} if params is None else {"inputs": rows.tolist(), "params": params}
        return json.dumps(body).encode()

__all__ = ["InvocationResult", "invoke_batches", "RETRY_STATUS"]

RETRY_STATUS = frozenset({429, 503, 504})
MAX_WAIT_S = 60.0  # the longest single wait, whatever Retry-After asks


@dataclass
class InvocationResult:
    """Per-epoch results (NaN probability / label 0 where the batch failed) and request stats."""

    probability: np.ndarray
    label: np.ndarray
    latencies_s: list[float] = field(default_factory=list)
    failed_batches: list[tuple[int, str]] = field(default_factory=list)
    retries: int = 0
    waited_s: float = 0.0  # time spent waiting out Retry-After (cold starts, throttling)
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


class _Transient(Exception):
    """A failed attempt worth another: ``retry_after`` seconds when the server said so."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Fatal(Exception):
    """A failed attempt that another would not fix (4xx, 500, a malformed answer)."""


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return Retry(retry_after_max=MAX_WAIT_S).parse_retry_after(value)
    except InvalidHeader:
        return None


def _parse(body: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    preds = json.loads(body)["predictions"]
    if len(preds) != n:
        raise ValueError(f"expected {n} predictions, got {len(preds)}")
    if preds and isinstance(preds[0], dict):
        return (np.array([p["probability"] for p in preds], dtype=np.float64),
                np.array([p["label"] for p in preds], dtype=np.int64))
    raise ValueError(f"unexpected prediction format: {str(preds[:1])[:200]}")


def _retrying(retries: int, backoff_s: float, cold_start_window_s: float,
              on_retry: Callable[[float, bool], None]) -> Retrying:
    """One batch's retry policy: ``retries`` counted retries; Retry-After waits inside the
    cold-start window are not counted."""
    counted = [0]
    backoff = wait_random_exponential(multiplier=backoff_s, max=MAX_WAIT_S)

    def waits_out(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        return isinstance(exc, _Transient) and exc.retry_after is not None \
            and state.seconds_since_start is not None and state.seconds_since_start < cold_start_window_s

    def stop(state: RetryCallState) -> bool:
        if waits_out(state):
            return False
        counted[0] += 1
        return counted[0] > retries

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return exc.retry_after
        return backoff(state)

    def before_sleep(state: RetryCallState) -> None:
        on_retry(state.upcoming_sleep, waits_out(state))

    return Retrying(retry=retry_if_exception_type(_Transient), stop=stop, wait=wait, before_sleep=before_sleep,
                    reraise=True)


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
    params: dict[str, Any] | None = None,
    cold_start_window_s: float = 0.0,
) -> InvocationResult:
    """POST ``{"inputs": rows[, "params": params]}`` batches of ``matrix`` to ``url``; results
    keep the row order."""
    n = len(matrix)
    result = InvocationResult(np.full(n, np.nan), np.zeros(n, dtype=np.int64))
    starts = list(range(0, n, batch_size))
    lock = threading.Lock()
    done = [0]
    hdrs = {"Content-Type": "application/json", **(headers or {})}

    def on_retry(sleep_s: float, waiting_out: bool) -> None:
        with lock:
            result.retries += 1
            if waiting_out:
                result.waited_s += sleep_s

    def one(client: httpx.Client, index: int, start: int) -> None:
        rows = matrix[start:start + batch_size]
        body = _encode(np.ascontiguousarray(rows), params)

        def attempt() -> tuple[np.ndarray, np.ndarray, float]:
            t0 = time.perf_counter()
            try:
                resp = client.post(url, content=body, headers=hdrs, timeout=timeout_s)
            except httpx.TransportError as exc:
                raise _Transient(f"{type(exc).__name__}: {exc}") from None
            elapsed = time.perf_counter() - t0
            if resp.status_code == 200:
                try:
                    return (*_parse(resp.content, len(rows)), elapsed)
                except (ValueError, KeyError, TypeError) as exc:
                    raise _Fatal(f"bad response: {exc}") from None
            reason = f"HTTP {resp.status_code}: {resp.text[:300]}"
            if resp.status_code in RETRY_STATUS:
                raise _Transient(reason, _retry_after(resp))
            raise _Fatal(reason)

        try:
            proba, label, elapsed = _retrying(retries, backoff_s, cold_start_window_s, on_retry)(attempt)
        except (_Transient, _Fatal) as exc:
            with lock:
                result.failed_batches.append((index, str(exc)))
            return
        with lock:
            result.probability[start:start + len(rows)] = proba
            result.label[start:start + len(rows)] = label
            result.latencies_s.append(elapsed)

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
