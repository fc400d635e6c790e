"""Kill -9 during train, deploy, evaluate, promote and score, then rerun: every registered version
complete, aliases on complete versions only, the endpoint serving what the registry says."""
from __future__ import annotations

import json
import os
import signal

import pytest
from fault_cases import kill_cases
from harness import failure_report

pytestmark = [pytest.mark.faults, pytest.mark.spark, pytest.mark.server]

TRAIN = kill_cases("train", ["train.after_register"], [0.5, 0.85], sampled={"train@train.after_register"})
DEPLOY = kill_cases("deploy", [], [0.3, 0.6, 0.9], sampled={"deploy@60%"})
EVALUATE = kill_cases("evaluate", [], [0.5, 0.8], sampled=set())
PROMOTE = kill_cases("promote", ["promote.after_endpoint", "promote.after_champion_alias"], [0.6],
                     sampled={"promote@promote.after_endpoint"})
SCORE = kill_cases("score", [], [0.5, 0.8], sampled=set())


@pytest.mark.parametrize("kill", TRAIN)
def test_train_converges(fault_case, invariants, kill):
    root, ref = fault_case("trained", ("train",), kill)
    assert invariants.registry(root) == invariants.registry(ref) == {"challenger": "1"}


@pytest.mark.parametrize("kill", DEPLOY)
def test_deploy_converges(fault_case, invariants, kill):
    """A deploy killed while the endpoint was updating: the next deploy finishes the update."""
    root, _ = fault_case("deployed", ("deploy",), kill)
    invariants.endpoint(root, invariants.registry(root))


@pytest.mark.parametrize("kill", EVALUATE)
def test_evaluate_converges(fault_case, invariants, kill):
    import mlflow

    from pipeline.config import load_config

    root, _ = fault_case("evaluated", ("evaluate", "--target", "challenger"), kill)
    cfg = load_config(root=str(root), env={})
    mlflow.set_tracking_uri(cfg.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.evaluation.experiment], output_format="list")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert finished and all("roc_auc" in r.data.metrics for r in finished)


@pytest.mark.parametrize("kill", PROMOTE)
def test_promote_converges(fault_case, invariants, kill):
    root, ref = fault_case("promoted", ("promote",), kill)
    aliases = invariants.registry(root)
    assert aliases == invariants.registry(ref) == {"champion": "1"}
    invariants.endpoint(root, aliases)


@pytest.mark.parametrize("kill", SCORE)
def test_score_converges(fault_case, invariants, kill):
    root, ref = fault_case("scored", ("score",), kill)
    invariants.same_table(root, ref, "predictions", ["model_version", "subject_id", "epoch_idx"], ignore=("scored_at",))


def _configs(root) -> list[dict]:
    """The persisted endpoints (their last-updated time aside: a restore applies the config again)."""
    records = json.loads((root / "serving" / "endpoints.json").read_text())["endpoints"]
    return [{k: r[k] for k in ("name", "id", "config_version", "config")} for r in records]


def test_a_killed_endpoint_server_comes_back_with_its_last_complete_config(prepared, case_root, invariants,
                                                                          p300_here):
    """kill -9 the local endpoint server; the next deploy starts it again, and it serves the config
    it had persisted, so the deploy has nothing to change (an update still loading when the server
    died is not in that file: it is dropped, and the next deploy applies it again)."""
    prepared.copy("deployed", case_root)  # the copy's own server, started by a deploy
    state = json.loads((case_root / "serving" / "server.json").read_text())
    persisted = _configs(case_root)
    os.kill(state["pid"], signal.SIGKILL)
    again = p300_here(case_root, "deploy")
    assert again.code == 0, failure_report(case_root, again)
    assert json.loads((case_root / "serving" / "server.json").read_text())["pid"] != state["pid"]
    assert _configs(case_root) == persisted
    invariants.endpoint(case_root, invariants.registry(case_root))
