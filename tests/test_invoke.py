"""The evaluation client against a real loopback HTTP server that misbehaves on purpose."""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from pipeline.invoke import invoke_batches


class _Flaky(BaseHTTPRequestHandler):
    attempts: dict = {}
    lock = threading.Lock()

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["inputs"]
        key = rows[0][0]
        with self.lock:
            self.attempts[key] = self.attempts.get(key, 0) + 1
            attempt = self.attempts[key]
        if key == 64.0:  # the second batch always fails hard
            status, body = 500, {"error_code": "INTERNAL_ERROR", "message": "boom"}
        elif attempt == 1:  # every other batch is throttled once, then unavailable once
            status, body = 429, {"message": "slow down"}
        elif attempt == 2:
            status, body = 503, {"message": "warming up"}
        else:
            assert self.headers["Authorization"] == "Bearer t0k"
            status, body = 200, {"predictions": [{"probability": r[0] / 1000, "label": 2 if r[0] % 2 else 1} for r in rows]}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def flaky_url():
    _Flaky.attempts = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/invocations"
    server.shutdown()
    server.server_close()


def test_retries_keep_order_and_count_what_finally_failed(flaky_url):
    matrix = np.repeat(np.arange(200, dtype=np.float32)[:, None], 3, axis=1)
    seen = []
    res = invoke_batches(flaky_url, matrix, headers={"Authorization": "Bearer t0k"}, batch_size=64,
                         concurrency=3, retries=3, backoff_s=0.01, progress=lambda d, t: seen.append((d, t)))
    assert res.failed_batches and res.failed_batches[0][0] == 1 and "HTTP 500" in res.failed_batches[0][1]
    assert res.failed_epochs == 64 and np.isnan(res.probability[64:128]).all()
    ok = np.r_[0:64, 128:200]
    np.testing.assert_allclose(res.probability[ok], ok / 1000)
    np.testing.assert_array_equal(res.label[ok], np.where(ok % 2, 2, 1))
    assert res.retries == 3 * 2  # three good batches, each retried after 429 and 503; 500 is not retried
    assert len(res.latencies_s) == 3 and res.epochs_per_s > 0
    assert seen[-1] == (4, 4)


def test_connection_errors_are_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    res = invoke_batches(f"http://127.0.0.1:{port}/x", np.zeros((10, 2), np.float32), batch_size=4,
                         retries=2, backoff_s=0.01, timeout_s=2)
    assert res.failed_epochs == 10 and len(res.failed_batches) == 3
    assert all("ConnectError" in reason for _, reason in res.failed_batches)
    assert res.retries == 3 * 2
