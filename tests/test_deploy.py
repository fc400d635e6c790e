"""`p300 deploy` and `p300 endpoint` against real local server processes and a real registry."""
from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from databricks.sdk.service.serving import ServedEntityInput

from config_factory import make_config
from pipeline import registry as reg
from pipeline import serving as sv
from pipeline.cli import run
from pipeline.deploy import versions_to_serve
from pipeline.report import Reporter
from serving_fixtures import for_endpoint, register_gated_version, register_p300_version

pytestmark = pytest.mark.server

N = 8


@pytest.fixture(scope="module")
def reg_env(tmp_path_factory):
    """One root and registry: three P300 versions and a gated one; no aliases yet."""
    root = tmp_path_factory.mktemp("deploy") / "lakehouse"
    root.mkdir()
    cfg = make_config(root)
    versions = [register_p300_version(cfg, N, seed=s) for s in range(3)]
    hold = root / "hold-loading"
    gated = register_gated_version(cfg, hold)
    yield cfg, versions, gated, hold
    sv.stop_local_server(cfg)


def aliases(cfg, champion: str | None = None, challenger: str | None = None) -> None:
    client = reg.mlflow_client(cfg)
    for alias, version in (("champion", champion), ("challenger", challenger)):
        if version is None:
            reg.clear_alias(client, cfg, alias)
        else:
            reg.set_alias(client, cfg, alias, version)


def p300(cfg, *argv: str, err: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), err or io.StringIO()
    code = run(["--root", cfg.root, *argv], environ={}, reporter=Reporter(out=out, err=err))
    return code, out.getvalue(), err.getvalue()


def endpoint(cfg, name: str):
    return sv.get_endpoint(sv.workspace_client(cfg), name)


def test_versions_to_serve():
    assert versions_to_serve(None, "3") == {"challenger": "3"}
    assert versions_to_serve("2", "3") == {"champion": "2", "challenger": "3"}
    assert versions_to_serve("3", "3") == {"champion": "3"}
    assert versions_to_serve("2", None) == {"champion": "2"}
    assert versions_to_serve(None, None) == {}
    assert sv.desired_routes(["champion", "challenger"]) == {"champion": 100, "challenger": 0}
    assert sv.desired_routes(["challenger"]) == {"challenger": 100}


def test_deploy_creates_then_is_idempotent_then_updates_once(reg_env):
    cfg, (v1, v2, v3), _, _ = reg_env
    name = "lifecycle"
    sets = ["--set", f"serving.endpoint_name={name}"]
    sv.stop_local_server(cfg)
    aliases(cfg)
    code, _, err = p300(cfg, *sets, "deploy")
    assert code == 1 and "run `p300 train` first" in err
    assert sv.server_info(cfg) is None  # refused before starting anything

    aliases(cfg, challenger=v1)
    code, out, err = p300(cfg, *sets, "deploy")
    assert code == 0, err
    assert "created" in out and "starting the local serving endpoint server" in err
    assert sv.server_info(cfg) is not None  # started in the background, outlives the command
    ep = endpoint(cfg, name)
    assert sv.served_versions(ep) == {"challenger": v1}
    assert sv.traffic_routes(ep) == {"challenger": 100}

    code, out, err = p300(cfg, *sets, "deploy")
    assert code == 0 and "unchanged" in out and "already serves challenger v1" in err
    assert endpoint(cfg, name).config.config_version == 1

    aliases(cfg, champion=v1, challenger=v2)
    for expected in ("updated", "unchanged"):  # deploying twice makes one update
        code, out, err = p300(cfg, *sets, "deploy")
        assert code == 0 and expected in out, err
    ep = endpoint(cfg, name)
    assert ep.config.config_version == 2
    assert sv.served_versions(ep) == {"champion": v1, "challenger": v2}
    assert sv.traffic_routes(ep) == {"champion": 100, "challenger": 0}
    # the challenger is reached directly, the routed URL goes to the champion
    ws = sv.workspace_client(cfg)
    url = sv.invocation_url(ws, for_endpoint(cfg, name), "challenger")
    resp = httpx.post(url, json={"inputs": [[0.0] * N]}, headers=sv.auth_headers(ws))
    assert resp.status_code == 200 and resp.headers["x-served-version"] == v2

    aliases(cfg, champion=v2)  # after a promotion: the champion alone
    code, out, _ = p300(cfg, *sets, "deploy")
    assert code == 0 and "updated" in out
    ep = endpoint(cfg, name)
    assert sv.served_versions(ep) == {"champion": v2} and sv.traffic_routes(ep) == {"champion": 100}


def test_deploy_waits_for_an_update_in_progress_then_applies_its_own(reg_env):
    cfg, (v1, v2, v3), gated, hold = reg_env
    name = "contended"
    aliases(cfg, champion=v1, challenger=v2)
    assert p300(cfg, "--set", f"serving.endpoint_name={name}", "deploy")[0] == 0
    ws = sv.workspace_client(cfg)
    hold.touch()
    try:  # someone else's update, held IN_PROGRESS until the hold file goes
        ws.serving_endpoints.update_config(name=name, served_entities=[ServedEntityInput(
            name="challenger", entity_name=cfg.registry.model_name, entity_version=gated, workload_size="Small",
            scale_to_zero_enabled=True)])
        aliases(cfg, champion=v1, challenger=v3)
        err = io.StringIO()
        result: list = []
        thread = threading.Thread(target=lambda: result.append(
            p300(cfg, "--set", f"serving.endpoint_name={name}", "deploy", err=err)))
        thread.start()
        deadline = time.monotonic() + 60
        while "update in progress" not in err.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "update in progress" in err.getvalue()
        assert thread.is_alive()  # deploy is waiting
    finally:
        hold.unlink()
    thread.join(timeout=120)
    code, out, _ = result[0]
    assert code == 0 and "updated" in out and "waited for 1 update(s) in progress" in out
    ep = endpoint(cfg, name)
    assert sv.served_versions(ep) == {"champion": v1, "challenger": v3}
    assert ep.config.config_version == 3  # ours came after the other one


def test_the_databricks_backend_is_the_same_sdk_code_path(reg_env, monkeypatch):
    """backend databricks: the SDK finds host and token in the usual DATABRICKS_* variables
    (here they point at the local server, the only workspace a test may reach)."""
    cfg, (v1, v2, _), _, _ = reg_env
    info = sv.start_local_server(cfg)
    monkeypatch.setenv("DATABRICKS_HOST", info.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-test")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", "/nonexistent/databrickscfg")
    aliases(cfg, champion=v1, challenger=v2)
    sets = ["--set", "serving.backend=databricks", "--set", "serving.endpoint_name=remote",
            "--set", "serving.workload_size=Medium", "--set", "serving.scale_to_zero=false"]
    for expected in ("created", "unchanged"):
        code, out, err = p300(cfg, *sets, "deploy")
        assert code == 0 and expected in out, err
    ep = endpoint(cfg, "remote")
    assert {e.name: (e.entity_version, e.workload_size, e.scale_to_zero_enabled)
            for e in ep.config.served_entities} == {"champion": (v1, "Medium", False),
                                                    "challenger": (v2, "Medium", False)}
    code, out, _ = p300(cfg, *sets, "endpoint", "status")
    assert code == 0 and "remote" in out and "champion=v1" in out


def test_endpoint_status_and_stop(reg_env):
    cfg, (v1, _, _), _, _ = reg_env
    aliases(cfg, challenger=v1)
    assert p300(cfg, "--set", "serving.endpoint_name=shown", "deploy")[0] == 0
    pid = sv.server_info(cfg).pid
    code, out, _ = p300(cfg, "endpoint", "status")
    assert code == 0 and f"running: pid {pid}" in out and "auth off" in out
    assert "shown" in out and "READY" in out and "challenger=v" in out
    code, out, _ = p300(cfg, "endpoint", "stop")
    assert code == 0 and f"stopped the serving endpoint server (pid {pid})" in out
    assert sv.server_info(cfg) is None
    assert p300(cfg, "endpoint", "status")[1].startswith("not running")
    assert "no serving endpoint server runs" in p300(cfg, "endpoint", "stop")[1]


def test_endpoint_serve_runs_in_the_foreground_until_interrupted(tmp_path):
    root = tmp_path / "fg"
    cfg = make_config(root)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--root", str(root), "endpoint", "serve",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while sv.server_info(cfg) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        info = sv.server_info(cfg)
        assert info is not None and info.pid == proc.pid and info.host == "127.0.0.1"
        assert httpx.get(f"{info.url}/api/2.0/serving-endpoints").json() == {"endpoints": []}
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            sv.stop_pid(proc.pid)
    assert proc.returncode == 0, err.decode()
    assert "serving on http://127.0.0.1:" in err.decode() and "stopped" in err.decode()
    assert not (cfg.serving_dir / "server.json").exists()
