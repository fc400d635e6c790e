"""Cold starts end to end: a real local server that simulates scale-to-zero, real `p300 deploy`
and `p300 evaluate`. Within the cold-start window, evaluate waits out the 503 + Retry-After
answers and finishes with 0 failed batches; with no window and no retries the same cold
start fails every batch (what every evaluate after an idle period did before)."""
from __future__ import annotations

import time

import pytest

from pipeline import registry as reg
from pipeline.cli import run
from pipeline.evaluate import TAG_TARGET_SET
from pipeline.serving.process import stop_local_server
from synth_features import features_frame, write_features

pytestmark = pytest.mark.server

IDLE_S, WARMUP_S = 0.5, 2.0


def p300(root, *argv: str) -> int:
    return run(["--root", str(root), "-q", "--set", "spark.master=local[2]", "--set", "training.cv_folds=2",
                "--set", f"serving.simulate_cold_start_after_idle_s={IDLE_S}",
                "--set", f"serving.simulate_cold_start_s={WARMUP_S}", *argv], environ={})


def _latest_eval(client, cfg):
    exp = client.get_experiment_by_name(cfg.evaluation.experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_TARGET_SET}` = 'challenger'",
                              order_by=["attributes.start_time DESC"], max_results=1)[0]


def test_evaluate_waits_out_a_cold_start_and_fails_no_batch(spark, root, cfg):
    write_features(spark, cfg, features_frame((1, 2, 3, 4), minutes=1.5, n_channels=4, sfreq=128.0))
    client = reg.mlflow_client(cfg)
    try:
        assert p300(root, "train", "--train-fraction", "0.5") == 0
        assert p300(root, "deploy") == 0  # starts the server (a real process) with the cold-start simulation

        time.sleep(2 * IDLE_S)  # the endpoint idles: it has scaled to zero
        assert p300(root, "--set", "evaluation.retries=1", "--set", "evaluation.cold_start_window_s=120",
                    "evaluate", "--target", "challenger") == 0
        run1 = _latest_eval(client, cfg)
        assert run1.data.metrics["failed_requests"] == 0
        assert run1.data.metrics["epochs_scored"] == run1.data.metrics["epochs"] > 0
        assert run1.data.metrics["retries"] >= 1  # it did meet the cold start

        time.sleep(WARMUP_S + 2 * IDLE_S)  # idle again; this time no window and no retries
        assert p300(root, "--set", "evaluation.retries=0", "--set", "evaluation.cold_start_window_s=0",
                    "evaluate", "--target", "challenger") == 1  # nothing scored: a failed job
        run2 = _latest_eval(client, cfg)
        assert run2.info.run_id != run1.info.run_id
        assert run2.data.metrics["failed_requests"] > 0 and run2.data.metrics["epochs_scored"] == 0
        failed = client.download_artifacts(run2.info.run_id, "failed_requests.txt")
        assert "HTTP 503" in open(failed).read()
    finally:
        stop_local_server(cfg)
