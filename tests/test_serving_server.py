"""The local serving endpoint server, as a real process on 127.0.0.1, driven through
databricks-sdk and raw HTTP: the SDK round trip, input formats, bad input, hot swap
under load, restart, auth on and off."""
from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from databricks.sdk.errors import BadRequest, NotFound, ResourceAlreadyExists, ResourceConflict
from databricks.sdk.service.serving import (
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    Route,
    ServedEntityInput,
    TrafficConfig,
)

from config_factory import make_config
from pipeline import serving as sv
from pipeline.cli import run
from pipeline.config import ConfigError
from pipeline.report import Reporter
from serving_fixtures import (
    for_endpoint,
    register_gated_version,
    register_p300_version,
    register_params_version,
    running_server,
    synthetic_epochs,
)

pytestmark = pytest.mark.server

N = 12  # features per epoch
WAIT = timedelta(seconds=120)


def settled(ws, waiter):
    """An SDK operation's result through the pipeline's own wait (quick looks, then the SDK's
    waiter, whose first sleep is 1-2 s); the round-trip test keeps the SDK's ``result()``."""
    return sv.wait_until_not_updating(ws, waiter.response.name, WAIT.total_seconds())


@dataclass
class Env:
    cfg: object
    info: sv.ServerInfo
    v1: str
    v2: str
    v3: str
    gated: str
    hold: Path
    with_params: str
    with_params_slow: str

    @property
    def ws(self):
        return sv.workspace_client(self.cfg)

    def url(self, endpoint: str = "ep", served: str | None = None) -> str:
        base = f"{self.info.url}/serving-endpoints/{endpoint}"
        return f"{base}/served-models/{served}/invocations" if served else f"{base}/invocations"


def entities(cfg, **versions: str) -> list[ServedEntityInput]:
    return [ServedEntityInput(name=n, entity_name=cfg.registry.model_name, entity_version=v, workload_size="Small",
                              scale_to_zero_enabled=True) for n, v in versions.items()]


def traffic(**routes: int) -> TrafficConfig:
    return TrafficConfig(routes=[Route(served_model_name=n, traffic_percentage=p) for n, p in routes.items()])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving") / "lakehouse"
    root.mkdir()
    cfg = make_config(root, **{"serving.max_body_mb": "0.25"})
    v1 = register_p300_version(cfg, N, seed=0)
    v2 = register_p300_version(cfg, N, seed=1, shift=3.0)
    v3 = register_p300_version(cfg, N, seed=2, shift=2.0)
    hold = root / "hold-loading"
    gated = register_gated_version(cfg, hold)
    with_params = register_params_version(cfg, N)
    with_params_slow = register_params_version(cfg, N, fast=False)
    with running_server(cfg) as info:
        ws = sv.workspace_client(cfg)
        settled(ws, ws.serving_endpoints.create(name="ep", config=EndpointCoreConfigInput(
            name="ep", served_entities=entities(cfg, champion=v1, challenger=v2),
            traffic_config=traffic(champion=100, challenger=0))))
        yield Env(cfg, info, v1, v2, v3, gated, hold, with_params, with_params_slow)


@pytest.fixture(scope="module")
def local_model(env):
    """The same version, loaded in the test process: what the server must answer."""
    return mlflow.pyfunc.load_model(f"models:/{env.cfg.registry.model_name}/{env.v1}").unwrap_python_model()


def test_sdk_create_get_update_delete_round_trip(env):
    ws = env.ws
    created = ws.serving_endpoints.create(name="roundtrip", config=EndpointCoreConfigInput(
        name="roundtrip", served_entities=entities(env.cfg, challenger=env.v1))).result(timeout=WAIT)  # the SDK's own waiter
    assert created.state.ready == EndpointStateReady.READY
    assert created.state.config_update == EndpointStateConfigUpdate.NOT_UPDATING
    assert sv.served_versions(created) == {"challenger": env.v1}
    assert sv.traffic_routes(created) == {"challenger": 100}
    assert created.config.config_version == 1
    assert created.config.served_entities[0].state.deployment.value == "DEPLOYMENT_READY"

    with pytest.raises(ResourceAlreadyExists):
        ws.serving_endpoints.create(name="roundtrip", config=EndpointCoreConfigInput(
            name="roundtrip", served_entities=entities(env.cfg, challenger=env.v1)))

    updated = ws.serving_endpoints.update_config_and_wait(
        name="roundtrip", served_entities=entities(env.cfg, champion=env.v1, challenger=env.v2),
        traffic_config=traffic(champion=100, challenger=0), timeout=WAIT)
    assert updated.config.config_version == 2
    assert sv.served_versions(updated) == {"champion": env.v1, "challenger": env.v2}
    assert sv.traffic_routes(updated) == {"champion": 100, "challenger": 0}
    assert ws.serving_endpoints.get("roundtrip").pending_config is None
    assert "roundtrip" in [e.name for e in ws.serving_endpoints.list()]

    ws.serving_endpoints.delete("roundtrip")
    with pytest.raises(NotFound):
        ws.serving_endpoints.get("roundtrip")
    with pytest.raises(NotFound):
        ws.serving_endpoints.delete("roundtrip")
    assert sv.get_endpoint(ws, "roundtrip") is None


@pytest.mark.parametrize("config, error, fragment", [
    ({"served_entities": []}, BadRequest, "served_entities"),
    ({"served_entities": [{"name": "a", "entity_name": "p300-classifier", "entity_version": "999"}]},
     NotFound, "does not exist"),
    ({"served_entities": [{"name": "a", "entity_name": "p300-classifier", "entity_version": "1"}],
      "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 90}]}}, BadRequest, "sum to 100"),
    ({"served_entities": [{"name": "a", "entity_name": "p300-classifier", "entity_version": "1"}],
      "traffic_config": {"routes": [{"served_model_name": "b", "traffic_percentage": 100}]}}, BadRequest, "'b'"),
    ({"served_entities": [{"name": "a b", "entity_name": "p300-classifier", "entity_version": "1"}]},
     BadRequest, "letters"),
])
def test_invalid_configs_are_refused_with_a_message(env, config, error, fragment):
    with pytest.raises(error, match=fragment):
        env.ws.serving_endpoints.create(name="invalid", config=EndpointCoreConfigInput.from_dict({"name": "invalid",
                                                                                                  **config}))
    assert sv.get_endpoint(env.ws, "invalid") is None


def test_every_input_format_scores_like_the_model(env, local_model):
    X, _ = synthetic_epochs(7, N, seed=9)
    proba, labels = local_model.predict_matrix(X)
    cols = [f"f{i}" for i in range(N)]
    bodies = {
        "inputs": {"inputs": X.tolist()},
        "instances": {"instances": X.tolist()},
        "named tensor": {"inputs": {"features": X.tolist()}},
        "dataframe_split": {"dataframe_split": {"columns": cols, "data": X.tolist()}},
        "dataframe_split, one array column": {"dataframe_split": {"columns": ["features"],
                                                                  "data": [[row] for row in X.tolist()]}},
        "dataframe_records": {"dataframe_records": [dict(zip(cols, row)) for row in X.tolist()]},
    }
    for what, body in bodies.items():
        resp = httpx.post(env.url("ep", "champion"), json=body)
        assert resp.status_code == 200, (what, resp.text)
        preds = resp.json()["predictions"]
        np.testing.assert_allclose([p["probability"] for p in preds], proba, rtol=1e-6, err_msg=what)
        assert [p["label"] for p in preds] == labels.tolist(), what
    one = httpx.post(env.url("ep", "champion"), json={"inputs": X[0].tolist()})  # a single epoch, unbatched
    assert one.status_code == 200 and len(one.json()["predictions"]) == 1


def test_routing_follows_traffic_and_direct_urls_reach_each_entity(env):
    body = {"inputs": np.zeros((2, N)).tolist()}
    routed = [httpx.post(env.url("ep"), json=body).headers["x-served-version"] for _ in range(5)]
    assert routed == [env.v1] * 5  # champion 100 / challenger 0
    direct = httpx.post(env.url("ep", "challenger"), json=body)
    assert direct.status_code == 200 and direct.headers["x-served-version"] == env.v2
    assert direct.json() != httpx.post(env.url("ep", "champion"), json=body).json()


def test_params_reach_the_model_on_both_paths_and_are_checked(env):
    """``params`` beside the inputs go to predict_matrix(..., params=) (fast path) or to
    pyfunc.predict(..., params=) (otherwise), checked against the signature's params schema."""
    settled(env.ws, env.ws.serving_endpoints.create(name="params", config=EndpointCoreConfigInput(
        name="params", served_entities=entities(env.cfg, fast=env.with_params, slow=env.with_params_slow,
                                                plain=env.v1))))
    rows = np.zeros((3, N)).tolist()
    for served in ("fast", "slow"):
        url = env.url("params", served)
        resp = httpx.post(url, json={"inputs": rows, "params": {"offset": 0.25, "subject_id": 7}})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"predictions": [{"probability": 0.75, "label": 7}] * 3}, served
        records = [dict(zip([f"f{i}" for i in range(N)], r)) for r in rows]
        resp = httpx.post(url, json={"dataframe_records": records, "params": {"subject_id": 3}})  # defaults fill in
        assert resp.status_code == 200 and resp.json()["predictions"][0] == {"probability": 0.5, "label": 3}
        without = httpx.post(url, json={"inputs": rows})  # the contract without params is unchanged
        assert without.status_code == 200 and without.json()["predictions"][0] == {"probability": 0.5, "label": -1}
        bad = httpx.post(url, json={"inputs": rows, "params": {"subject_id": "seven"}})
        assert bad.status_code == 400 and "subject_id" in bad.json()["message"], served
        bad = httpx.post(url, json={"inputs": rows, "params": [7]})
        assert bad.status_code == 400 and "params must be a JSON object" in bad.json()["message"]
    # a model whose signature declares no params ignores them, as MLflow does (the inference log keeps them)
    plain = httpx.post(env.url("params", "plain"), json={"inputs": rows, "params": {"subject_id": 7}})
    assert plain.status_code == 200, plain.text
    assert plain.json() == httpx.post(env.url("params", "plain"), json={"inputs": rows}).json()
    # the invocation client sends them
    from pipeline.invoke import invoke_batches

    res = invoke_batches(env.url("params", "fast"), np.zeros((10, N), np.float32), batch_size=4,
                         params={"offset": -0.25, "subject_id": 9})
    assert res.failed_batches == [] and np.allclose(res.probability, 0.25) and (res.label == 9).all()
    env.ws.serving_endpoints.delete("params")


def _nan_body(token: str) -> bytes:
    return ('{"inputs": [[' + ", ".join(["0.5"] * (N - 1) + [token]) + "]]}").encode()


BAD_REQUESTS = {
    "wrong feature count": (json.dumps({"inputs": [[0.1] * (N - 1)]}).encode(), 400, f"expected {N} features"),
    "non-numeric": (json.dumps({"inputs": [["a"] * N]}).encode(), 400, "must be numbers"),
    "nulls": (json.dumps({"inputs": [[None] * N]}).encode(), 400, "must be numbers"),
    "booleans": (json.dumps({"inputs": [[True] * N]}).encode(), 400, "must be numbers"),
    "NaN": (_nan_body("NaN"), 400, "NaN"),
    "Infinity": (_nan_body("-Infinity"), 400, "NaN or infinite"),
    "beyond float32": (_nan_body("1e300"), 400, "beyond float32"),
    "empty batch": (b'{"inputs": []}', 400, "empty batch"),
    "ragged rows": (json.dumps({"inputs": [[0.1] * N, [0.1] * (N - 1)]}).encode(), 400, "same length"),
    "malformed JSON": (b'{"inputs": [[1, 2', 400, "not valid JSON"),
    "empty body": (b"", 400, "empty body"),
    "deep nesting": (b"[" * 100_000, 400, "not valid JSON"),
    "not an object": (b"[1, 2]", 400, "JSON object"),
    "unknown format": (b'{"data": [[1]]}', 400, "dataframe_split"),
    "empty records": (b'{"dataframe_records": []}', 400, "empty batch"),
    "records missing a column": (json.dumps({"dataframe_records": [{"a": 1, "b": 2}, {"a": 1}]}).encode(), 400,
                                 "dataframe_records[1]"),
    "split without data": (b'{"dataframe_split": {"columns": ["a"]}}', 400, "'data'"),
    "oversized body": (json.dumps({"inputs": [[0.123456789] * N] * 40_000}).encode(), 413, "max_body_mb"),
}


@pytest.mark.parametrize("what", list(BAD_REQUESTS))
def test_bad_input_gets_a_4xx_with_a_message_and_the_server_stays_up(env, what):
    body, status, fragment = BAD_REQUESTS[what]
    resp = httpx.post(env.url("ep", "champion"), content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == status, resp.text
    assert fragment in resp.json()["message"]
    assert resp.json()["error_code"]
    ok = httpx.post(env.url("ep"), json={"inputs": [[0.1] * N]})
    assert ok.status_code == 200


def test_an_oversized_chunked_body_is_refused_while_streaming(env):
    def chunks():
        yield b'{"inputs": ['
        for _ in range(2000):
            yield (json.dumps([0.123456789] * N) + ",").encode() * 10
    resp = httpx.post(env.url("ep"), content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and "max_body_mb" in resp.json()["message"]
    assert httpx.get(f"{env.info.url}/health").status_code == 200


@pytest.mark.parametrize("method, path, status", [
    ("POST", "/serving-endpoints/nope/invocations", 404),
    ("POST", "/serving-endpoints/ep/served-models/nope/invocations", 404),
    ("GET", "/api/2.0/serving-endpoints/nope", 404),
    ("PUT", "/api/2.0/serving-endpoints/nope/config", 404),
    ("GET", "/no/such/route", 404),
    ("GET", "/serving-endpoints/ep/invocations", 405),
])
def test_unknown_endpoints_and_served_models_are_404(env, method, path, status):
    resp = httpx.request(method, f"{env.info.url}{path}", json={"inputs": [[0.0] * N]})
    assert resp.status_code == status
    assert resp.json()["message"]


def test_update_while_one_is_in_progress_is_a_conflict_and_the_old_config_keeps_serving(env):
    ws = env.ws
    settled(ws, ws.serving_endpoints.create(name="busy", config=EndpointCoreConfigInput(
        name="busy", served_entities=entities(env.cfg, champion=env.v1))))
    env.hold.touch()  # the gated version's load waits until the file is gone
    try:
        waiter = ws.serving_endpoints.update_config(name="busy",
                                                    served_entities=entities(env.cfg, champion=env.gated))
        pending = ws.serving_endpoints.get("busy")
        assert pending.state.config_update == EndpointStateConfigUpdate.IN_PROGRESS
        assert pending.state.ready == EndpointStateReady.READY
        assert pending.pending_config.served_entities[0].entity_version == env.gated
        with pytest.raises(ResourceConflict, match="currently being updated"):
            ws.serving_endpoints.update_config(name="busy", served_entities=entities(env.cfg, champion=env.v2))
        resp = httpx.post(f"{env.info.url}/serving-endpoints/busy/invocations", json={"inputs": [[0.0] * N]})
        assert resp.status_code == 200 and resp.headers["x-served-version"] == env.v1
    finally:
        env.hold.unlink()
    done = settled(ws, waiter)
    assert sv.served_versions(done) == {"champion": env.gated}
    # a model without predict_matrix is served through pyfunc.predict
    resp = httpx.post(f"{env.info.url}/serving-endpoints/busy/invocations",
                      json={"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"predictions": [{"probability": 0.5, "label": 1}] * 2}
    ws.serving_endpoints.delete("busy")


def test_hot_swap_under_load_fails_no_request(env):
    """Four clients post without pause while the champion is swapped four times. Phases
    order the test instead of sleeps: an even phase has no update in flight, an odd one
    has. A request that starts and ends inside one even phase must get that phase's
    version; inside the gated version's held load it must get the previous one."""
    ws = env.ws
    settled(ws, ws.serving_endpoints.create(name="swap", config=EndpointCoreConfigInput(
        name="swap", served_entities=entities(env.cfg, champion=env.v1))))
    X, _ = synthetic_epochs(50, N, seed=5)
    body = json.dumps({"inputs": X.tolist()}).encode()
    stop = threading.Event()
    phase = [0]
    done: list[tuple[int, int, str]] = []  # (phase at send, phase at answer, served version)
    failures: list[str] = []
    cond = threading.Condition()

    def client(url: str) -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                before = phase[0]
                try:
                    resp = http.post(url, content=body, headers={"Content-Type": "application/json"})
                    ok = resp.status_code == 200 and len(resp.json()["predictions"]) == len(X)
                    outcome = resp.headers.get("x-served-version") if ok else f"{resp.status_code} {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, outcome = False, repr(exc)
                with cond:
                    (done.append((before, phase[0], outcome)) if ok else failures.append(outcome))
                    cond.notify_all()

    def served_within(p: int) -> list[str]:
        return [v for a, b, v in done if a == b == p]

    def await_requests(p: int, n: int = 8) -> None:
        with cond:
            assert cond.wait_for(lambda: len(served_within(p)) >= n or failures, timeout=120), f"phase {p} stalled"

    threads = [threading.Thread(target=client, args=(env.url("swap", "champion" if i % 2 else None),))
               for i in range(4)]
    for t in threads:
        t.start()
    versions = [env.v1, env.v3, env.gated, env.v1, env.v2]
    try:
        await_requests(0)
        for k, version in enumerate(versions[1:], start=1):
            with cond:
                phase[0] = 2 * k - 1  # an update in flight
            if version == env.gated:  # its load waits while the hold file exists
                env.hold.touch()
                waiter = ws.serving_endpoints.update_config(name="swap",
                                                            served_entities=entities(env.cfg, champion=version))
                assert ws.serving_endpoints.get("swap").state.config_update == EndpointStateConfigUpdate.IN_PROGRESS
                await_requests(2 * k - 1)  # served while the new version loads
                with cond:
                    phase[0] = -1  # releasing the load: either version may answer
                env.hold.unlink()
                settled(ws, waiter)
            else:
                settled(ws, ws.serving_endpoints.update_config(name="swap", served_entities=entities(env.cfg, champion=version)
                                                   ))
            with cond:
                phase[0] = 2 * k
            await_requests(2 * k)
    finally:
        stop.set()
        env.hold.unlink(missing_ok=True)
        for t in threads:
            t.join()
    ws.serving_endpoints.delete("swap")
    assert failures == []
    for k, version in enumerate(versions):
        assert set(served_within(2 * k)) == {version}, (k, version)
    held = versions.index(env.gated)
    assert set(served_within(2 * held - 1)) == {versions[held - 1]}  # the old config kept serving


def test_a_restarted_server_restores_its_endpoints(env):
    old_pid = env.info.pid
    assert sv.stop_local_server(env.cfg) == old_pid
    assert sv.server_info(env.cfg) is None
    assert (env.cfg.serving_dir / "endpoints.json").exists()
    env.info = sv.start_local_server(env.cfg)  # the module's server from here on
    assert env.info.pid != old_pid
    ep = sv.wait_until_ready(env.ws, for_endpoint(env.cfg, "ep"), 120)  # the models load again in the background
    assert sv.served_versions(ep) == {"champion": env.v1, "challenger": env.v2}
    assert sv.traffic_routes(ep) == {"champion": 100, "challenger": 0}
    resp = httpx.post(env.url("ep"), json={"inputs": [[0.0] * N]})
    assert resp.status_code == 200 and resp.headers["x-served-version"] == env.v1


def test_one_server_per_root(env):
    again = sv.start_local_server(env.cfg)  # finds the running one
    assert again.pid == env.info.pid
    err = io.StringIO()
    assert run(["--root", env.cfg.root, "endpoint", "serve"], environ={},
               reporter=Reporter(out=io.StringIO(), err=err)) == 1
    assert "already runs" in err.getvalue()


def test_auth_off_accepts_requests_without_a_token(env):
    assert env.info.token is None
    assert httpx.get(f"{env.info.url}/health").status_code == 200
    assert httpx.post(env.url("ep"), json={"inputs": [[0.0] * N]}).status_code == 200


def test_auth_on_checks_the_bearer_token_on_every_route(env, tmp_path):
    cfg = make_config(tmp_path / "auth", **{"registry.tracking_uri": env.cfg.tracking_uri,
                                            "serving.token": "s3cret-token"})
    with running_server(cfg) as info:
        assert info.token == "s3cret-token"
        assert oct((cfg.serving_dir / "server.json").stat().st_mode & 0o777) == "0o600"
        ws = sv.workspace_client(cfg)  # token read from <root>/serving/server.json
        settled(ws, ws.serving_endpoints.create(name="guarded", config=EndpointCoreConfigInput(
            name="guarded", served_entities=entities(cfg, challenger=env.v1))))
        url = sv.invocation_url(ws, for_endpoint(cfg, "guarded"), "challenger")
        body = {"inputs": [[0.0] * N]}
        assert httpx.post(url, json=body, headers=sv.auth_headers(ws)).status_code == 200
        http = httpx.Client()  # one client: each httpx.request() builds a new TLS context (20 ms)
        for method, path in [("GET", "/health"), ("GET", "/api/2.0/serving-endpoints"),
                             ("GET", "/api/2.0/serving-endpoints/guarded"),
                             ("DELETE", "/api/2.0/serving-endpoints/guarded"),
                             ("POST", "/serving-endpoints/guarded/invocations"),
                             ("POST", "/serving-endpoints/guarded/served-models/challenger/invocations"),
                             ("GET", "/no/such/route")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
                resp = http.request(method, f"{info.url}{path}", json=body, headers=headers)
                assert resp.status_code == 401, (method, path, headers)
                assert resp.json()["error_code"] == "UNAUTHENTICATED"
        http.close()
        assert ws.serving_endpoints.get("guarded").state.ready == EndpointStateReady.READY
        # the SDK's discovery probe carries no credentials and reveals nothing
        assert httpx.get(f"{info.url}/.well-known/databricks-config").json() == {}


def test_binding_beyond_loopback_requires_a_token(tmp_path):
    cfg = make_config(tmp_path / "lh", **{"serving.host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="requires a token"):
        sv.start_local_server(cfg)
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        code = run(["--root", str(tmp_path / "lh"), "endpoint", "serve", "--host", "0.0.0.0"], environ={},
                   reporter=Reporter(out=io.StringIO(), err=io.StringIO()))
    assert code == 2 and "requires a token" in buf.getvalue()
    assert not (tmp_path / "lh" / "serving" / "server.json").exists()
