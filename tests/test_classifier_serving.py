"""Each classifier end to end: `p300 train` -> registered version tagged with its classifier
-> `p300 deploy` on the local endpoint server -> requests over HTTP (with and without a
subject reference in ``params``) -> `p300 evaluate` with per-subject AUC beside pooled.
The re-centring model is checked under both protocols through the endpoint: source-only
(no params) and unlabelled calibration (the first 20% of the subject's epochs)."""
from __future__ import annotations

import httpx
import mlflow
import numpy as np
import pytest

from config_factory import make_config
from pipeline import registry as reg
from pipeline.cli import run
from pipeline.classifiers import calibration_reference
from pipeline.serving import auth_headers, invocation_url, stop_local_server, workspace_client
from pipeline.subject_cv import calibration_split
from pipeline.tables import load_features
from synth_features import standard_frame, write_features

pytestmark = [pytest.mark.spark, pytest.mark.server]


def p300(root, *argv: str) -> int:
    return run(["--root", str(root), "-q", "--set", "spark.master=local[2]", "--set", "training.cv_folds=3",
                "--set", "training.n_jobs=1", *argv], environ={})


@pytest.mark.parametrize("classifier, alignment", [("lda", "none"), ("xdawn_ts", "recenter")])
def test_train_serve_evaluate(spark, root, classifier, alignment):
    cfg = make_config(root)
    write_features(spark, cfg, standard_frame())
    client = reg.mlflow_client(cfg)
    sets = ["--set", f"training.classifier={classifier}", "--set", f"training.alignment={alignment}"]
    try:
        assert p300(root, *sets, "train", "--subjects", "1-4") == 0
        mv = reg.alias_version(client, cfg, reg.CHALLENGER)
        assert mv.tags[reg.TAG_CLASSIFIER] == classifier and mv.tags[reg.TAG_ALIGNMENT] == alignment
        assert p300(root, "deploy") == 0
        ws = workspace_client(cfg)
        url, headers = invocation_url(ws, cfg, reg.CHALLENGER), auth_headers(ws)

        held = load_features(spark, cfg, [5], int(mv.tags[reg.PARAM_FEATURES_VERSION]))
        local = mlflow.pyfunc.load_model(reg.alias_uri(cfg, reg.CHALLENGER)).unwrap_python_model()
        n_cal = calibration_split(len(held.y), cfg.training.calibration_fraction)
        block, rest = held.X[:n_cal], held.X[n_cal:]

        def served(params=None) -> np.ndarray:
            body = {"inputs": rest[:100].tolist(), **({"params": params} if params else {})}
            resp = httpx.post(url, json=body, headers=headers, timeout=60)
            assert resp.status_code == 200, resp.text
            return np.array([p["probability"] for p in resp.json()["predictions"]])

        source = served()  # source-only, trialwise: the contract without params is unchanged
        np.testing.assert_allclose(source, local.predict_matrix(rest[:100])[0], rtol=1e-5, atol=1e-6)
        by_block = served({"calibration": block.ravel().tolist()})
        if alignment == "recenter":
            ref = calibration_reference(local.estimator, block)
            np.testing.assert_allclose(by_block, local.predict_matrix(rest[:100], ref)[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(served({"reference": ref.ravel().tolist()}), by_block, rtol=1e-5, atol=1e-6)
            assert not np.allclose(by_block, source)
        else:  # a model that does not re-centre scores the same with or without a reference
            np.testing.assert_allclose(by_block, source, rtol=1e-6)
        for wrong, message in (({"calibration": [1.0, 2.0]}, "whole number of epochs"),
                               ({"reference": np.eye(3).ravel().tolist()}, "channels")):
            bad = httpx.post(url, json={"inputs": rest[:2].tolist(), "params": wrong}, headers=headers, timeout=60)
            assert bad.status_code == 400 and message in bad.json()["message"], bad.text

        assert p300(root, "evaluate", "--target", "challenger") == 0
        exp = client.get_experiment_by_name(cfg.evaluation.experiment)
        (ev,) = client.search_runs([exp.experiment_id])
        m = ev.data.metrics
        assert m["roc_auc_subject_min"] <= m["roc_auc_subject_mean"] <= 1.0 and m["roc_auc"] > 0.7
        assert m["roc_auc_subject_mean"] == pytest.approx(np.mean([m["roc_auc_subject_05"], m["roc_auc_subject_06"]]))
    finally:
        stop_local_server(cfg)
