"""The evaluation client against a real loopback HTTP server that misbehaves on purpose.

The handler only records what it received and answers by a script; every check runs in
the test's own thread, so a wrong header or body fails the test (not just a retry).
"""
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from pipeline.invoke import invoke_batches


class _Scripted(BaseHTTPRequestHandler):
    """Answers per batch (keyed by its first value) and attempt from ``script``; records requests."""

    script = staticmethod(lambda key, attempt: (200, {}))
    received: list = []
    attempts: dict = {}
    lock = threading.Lock()

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        rows = body["inputs"]
        key = rows[0][0]
        with self.lock:
            self.attempts[key] = self.attempts.get(key, 0) + 1
            attempt = self.attempts[key]
            self.received.append({"key": key, "attempt": attempt, "at": time.monotonic(),
                                  "authorization": self.headers.get("Authorization"),
                                  "content_type": self.headers.get("Content-Type"), "params": body.get("params"),
                                  "keys": sorted(body)})
        status, extra_headers = self.script(key, attempt)
        if status == 200:
            payload = {"predictions": [{"probability": r[0] / 1000, "label": 2 if r[0] % 2 else 1} for r in rows]}
        else:
            payload = {"error_code": "SCRIPTED", "message": f"scripted {status}"}
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                            **extra_headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def scripted():
    """(url, set_script, received) of a fresh scripted server."""
    _Scripted.attempts, _Scripted.received = {}, []
    _Scripted.script = staticmethod(lambda key, attempt: (200, {}))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)  # shutdown() waits a poll
    thread.start()

    def set_script(fn):
        _Scripted.script = staticmethod(fn)

    yield f"http://127.0.0.1:{server.server_port}/invocations", set_script, _Scripted.received
    server.shutdown()
    server.server_close()


def _matrix(n=200, width=3):
    return np.repeat(np.arange(n, dtype=np.float32)[:, None], width, axis=1)


def test_retries_keep_order_and_count_what_finally_failed(scripted):
    url, set_script, received = scripted

    def script(key, attempt):
        if key == 64.0:  # the second batch always fails hard
            return 500, {}
        return {1: (429, {}), 2: (503, {})}.get(attempt, (200, {}))  # throttled once, then unavailable once

    set_script(script)
    seen = []
    res = invoke_batches(url, _matrix(), headers={"Authorization": "Bearer t0k"}, batch_size=64,
                         concurrency=3, retries=3, backoff_s=0.01, progress=lambda d, t: seen.append((d, t)))
    assert {r["authorization"] for r in received} == {"Bearer t0k"}
    assert {r["content_type"] for r in received} == {"application/json"}
    assert {tuple(r["keys"]) for r in received} == {("inputs",)}  # no params unless given
    assert res.failed_batches and res.failed_batches[0][0] == 1 and "HTTP 500" in res.failed_batches[0][1]
    assert [r["attempt"] for r in received if r["key"] == 64.0] == [1]  # 500 is not retried
    assert res.failed_epochs == 64 and np.isnan(res.probability[64:128]).all()
    ok = np.r_[0:64, 128:200]
    np.testing.assert_allclose(res.probability[ok], ok / 1000)
    np.testing.assert_array_equal(res.label[ok], np.where(ok % 2, 2, 1))
    assert res.retries == 3 * 2  # three good batches, each retried after 429 and 503
    assert len(res.latencies_s) == 3 and res.epochs_per_s > 0
    assert seen[-1] == (4, 4)


def test_params_go_with_every_batch(scripted):
    url, set_script, received = scripted
    res = invoke_batches(url, _matrix(10), batch_size=4, params={"subject_id": 7, "calibration": [0.5, 1.0]},
                         retries=0)
    assert res.failed_batches == [] and res.scored.all()
    assert len(received) == 3
    assert all(r["params"] == {"subject_id": 7, "calibration": [0.5, 1.0]} for r in received)


def test_retry_after_is_waited_out_inside_the_cold_start_window(scripted):
    """A cold start: each batch gets 503 + Retry-After: 1, with no retries allowed; within the
    window that wait is not a retry that counts, so nothing fails, and it lasts as long as
    the server asked."""
    url, set_script, received = scripted
    set_script(lambda key, attempt: (503, {"Retry-After": "1"}) if attempt <= 1 else (200, {}))
    res = invoke_batches(url, _matrix(8), batch_size=4, concurrency=2, retries=0, backoff_s=0.01,
                         cold_start_window_s=60)
    assert res.failed_batches == [] and res.scored.all()
    assert res.retries == 2 and res.waited_s == pytest.approx(2.0)
    for key in (0.0, 4.0):
        times = [r["at"] for r in received if r["key"] == key]
        assert len(times) == 2 and min(np.diff(times)) >= 0.95  # Retry-After: 1 honoured


def test_without_a_cold_start_window_retry_after_counts_as_a_retry(scripted):
    url, set_script, received = scripted
    set_script(lambda key, attempt: (503, {"Retry-After": "0"}) if attempt <= 3 else (200, {}))
    res = invoke_batches(url, _matrix(4), batch_size=4, retries=1, backoff_s=0.01)
    assert len(res.failed_batches) == 1 and "HTTP 503" in res.failed_batches[0][1]
    assert [r["attempt"] for r in received] == [1, 2]


@pytest.mark.parametrize("status", [429, 504])
def test_throttling_and_gateway_timeouts_with_retry_after_are_waits_too(scripted, status):
    url, set_script, _ = scripted
    set_script(lambda key, attempt: (status, {"Retry-After": "0"}) if attempt <= 4 else (200, {}))
    res = invoke_batches(url, _matrix(4), batch_size=4, retries=0, cold_start_window_s=30)
    assert res.failed_batches == [] and res.retries == 4


def test_connection_errors_are_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    res = invoke_batches(f"http://127.0.0.1:{port}/x", np.zeros((10, 2), np.float32), batch_size=4,
                         retries=2, backoff_s=0.01, timeout_s=2, cold_start_window_s=60)
    assert res.failed_epochs == 10 and len(res.failed_batches) == 3
    assert all("ConnectError" in reason for _, reason in res.failed_batches)
    assert res.retries == 3 * 2  # no Retry-After: the cold-start window does not apply
