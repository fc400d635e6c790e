"""The MLOps cycle end to end on local Spark, MLflow (sqlite) and the local endpoint server:
train v1 on half the subjects, deploy, evaluate the challenger, promote, train v2 on more,
deploy, evaluate both on a common holdout, gated promote; batch scoring on the side.
Registry aliases, the endpoint's config and the MLflow runs are checked at each step."""
from __future__ import annotations

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from pipeline import registry as reg
from pipeline.cli import run
from pipeline.evaluate import TAG_COMPARISON, TAG_TARGET_SET, choose_holdout
from pipeline.config import ConfigError
from pipeline.serving import get_endpoint, served_versions, stop_local_server, traffic_routes, workspace_client
from pipeline.storage import read_table
from synth_features import standard_frame, write_features
from config_factory import make_config


def p300(root, *argv: str) -> int:
    return run(["--root", str(root), "-q", "--set", "spark.master=local[2]", "--set", "training.cv_folds=3", *argv],
               environ={})


def test_holdout_rules():
    assert choose_holdout([1, 2, 3, 4], {"challenger": [1, 2]}, None).subjects == [3, 4]
    assert choose_holdout([1, 2, 3, 4, 5], {"champion": [1], "challenger": [1, 2, 3]}, None).subjects == [4, 5]
    assert choose_holdout([1, 2, 3, 4], {"challenger": [1]}, [3]).subjects == [3]
    with pytest.raises(ConfigError, match=r"empty holdout: .*challenger was trained on \[1, 2\]"):
        choose_holdout([1, 2], {"challenger": [1, 2]}, None)
    with pytest.raises(ConfigError, match="was trained on"):
        choose_holdout([1, 2, 3], {"challenger": [1]}, [1, 3])
    with pytest.raises(ConfigError, match="no features"):
        choose_holdout([1, 2, 3], {"challenger": [1]}, [9])


@pytest.mark.slow
def test_evaluation_metrics_leave_nothing_to_warn_about(cfg):
    import warnings

    import mlflow
    import numpy as np
    from mlflow.models.evaluation import default_evaluator  # noqa: F401  (its import-time hints are not ours)

    from pipeline.evaluate import evaluation_metrics

    reg.mlflow_client(cfg)
    rng = np.random.default_rng(0)
    y = np.tile([0, 0, 0, 1], 12)
    proba = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, len(y)), 0, 1)
    with warnings.catch_warnings(record=True) as seen, mlflow.start_run():
        warnings.simplefilter("always")
        metrics, _ = evaluation_metrics(y, proba, (proba >= 0.5).astype(int))
    assert [str(w.message)[:80] for w in seen if issubclass(w.category, UserWarning)] == []
    pred = proba >= 0.5
    assert metrics["true_positives"] == (pred & (y == 1)).sum() and metrics["false_positives"] == (pred & (y == 0)).sum()
    assert metrics["balanced_accuracy"] == pytest.approx(((pred & (y == 1)).sum() / 12 + (~pred & (y == 0)).sum() / 36) / 2)
    assert 0.5 < metrics["roc_auc"] <= 1


def _eval_runs(client, cfg, target_set):
    exp = client.get_experiment_by_name(cfg.evaluation.experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_TARGET_SET}` = '{target_set}'",
                              order_by=["attributes.start_time DESC"])


def test_train_deploy_evaluate_promote_cycle(spark, root, capsys):
    cfg = make_config(root)
    write_features(spark, cfg, standard_frame())  # subjects 1-6, preprocessed by udfs.preprocess
    client = reg.mlflow_client(cfg)
    try:
        # v1 on half the subjects, deployed as challenger
        assert p300(root, "train", "--train-fraction", "0.5") == 0
        v1 = reg.alias_version(client, cfg, reg.CHALLENGER)
        assert str(v1.version) == "1" and reg.training_subjects(client, v1) == [1, 2, 3]
        assert p300(root, "deploy") == 0
        ws = workspace_client(cfg)
        ep = get_endpoint(ws, cfg.serving.endpoint_name)
        assert served_versions(ep) == {"challenger": "1"} and traffic_routes(ep) == {"challenger": 100}

        # evaluate the challenger: its holdout excludes its training subjects
        assert p300(root, "evaluate", "--target", "challenger") == 0
        (run1,) = _eval_runs(client, cfg, "challenger")
        assert run1.data.tags["holdout_subjects"] == "4,5,6" and run1.data.tags["model_version"] == "1"
        assert run1.data.metrics["roc_auc"] > 0.7 and run1.data.metrics["failed_requests"] == 0
        assert run1.data.metrics["epochs_scored"] == run1.data.metrics["epochs"] > 100
        for key in ("balanced_accuracy", "f1_score", "precision_score", "recall_score", "latency_p50_ms",
                    "latency_p95_ms", "latency_p99_ms", "epochs_per_second", "roc_auc_subject_04"):
            assert key in run1.data.metrics, key
        artifacts = {a.path for a in client.list_artifacts(run1.info.run_id, "plots")}
        assert {"plots/roc_curve.png", "plots/confusion_matrix.png"} <= artifacts
        assert "holdout subjects [4, 5, 6]" in capsys.readouterr().out

        # promote: champion v1, endpoint follows, challenger cleared; a second promote is a no-op
        assert p300(root, "promote") == 0
        assert str(reg.alias_version(client, cfg, reg.CHAMPION).version) == "1"
        assert reg.alias_version(client, cfg, reg.CHALLENGER) is None
        assert client.get_model_version(cfg.registry.model_name, "1").current_stage == "Production"
        ep = get_endpoint(ws, cfg.serving.endpoint_name)
        assert served_versions(ep) == {"champion": "1"} and traffic_routes(ep) == {"champion": 100}
        config_version = ep.config.config_version
        assert p300(root, "promote") == 0
        assert "nothing to do" in capsys.readouterr().out
        assert get_endpoint(ws, cfg.serving.endpoint_name).config.config_version == config_version

        # v2 on 75% (subjects 1-5), deployed beside the champion
        assert p300(root, "train", "--train-fraction", "0.75") == 0
        v2 = reg.alias_version(client, cfg, reg.CHALLENGER)
        assert str(v2.version) == "2" and reg.training_subjects(client, v2) == [1, 2, 3, 4, 5]
        assert p300(root, "deploy") == 0
        ep = get_endpoint(ws, cfg.serving.endpoint_name)
        assert served_versions(ep) == {"champion": "1", "challenger": "2"}
        assert traffic_routes(ep) == {"champion": 100, "challenger": 0}

        # both on the common holdout: subjects neither saw
        assert p300(root, "evaluate", "--target", "both") == 0
        runs = _eval_runs(client, cfg, "both")
        assert len(runs) == 2 and len({r.data.tags[TAG_COMPARISON] for r in runs}) == 1
        by_target = {r.data.tags["served_entity"]: r for r in runs}
        assert {t: r.data.tags["model_version"] for t, r in by_target.items()} == {"champion": "1", "challenger": "2"}
        assert all(r.data.tags["holdout_subjects"] == "6" for r in runs)
        assert by_target["champion"].data.metrics["epochs"] == by_target["challenger"].data.metrics["epochs"]
        assert "plots/roc_compare.png" in {a.path for a in client.list_artifacts(runs[0].info.run_id, "plots")}
        champ_auc = by_target["champion"].data.metrics["roc_auc"]
        chall_auc = by_target["challenger"].data.metrics["roc_auc"]

        # gated promotion: an impossible margin refuses with both numbers and changes nothing
        capsys.readouterr()
        assert p300(root, "promote", "--require-better", "roc_auc", "--min-delta", "1.0") == 1
        out = capsys.readouterr().out
        assert f"{champ_auc:.4f}" in out and f"{chall_auc:.4f}" in out and "refused" in out
        assert str(reg.alias_version(client, cfg, reg.CHAMPION).version) == "1"
        assert served_versions(get_endpoint(ws, cfg.serving.endpoint_name)) == {"champion": "1", "challenger": "2"}
        assert p300(root, "promote", "--require-better", "no_such_metric") == 1
        # the real gate decides by the numbers
        code = p300(root, "promote", "--require-better", "roc_auc")
        if chall_auc > champ_auc:
            assert code == 0 and str(reg.alias_version(client, cfg, reg.CHAMPION).version) == "2"
            assert client.get_model_version(cfg.registry.model_name, "1").current_stage == "Archived"
            assert served_versions(get_endpoint(ws, cfg.serving.endpoint_name)) == {"champion": "2"}
        else:
            assert code == 1 and str(reg.alias_version(client, cfg, reg.CHAMPION).version) == "1"

        # batch scoring with the champion, idempotent
        assert p300(root, "score", "--alias", "champion", "--subjects", "5,6") == 0
        first = read_table(spark, cfg, "predictions")
        champion_version = int(reg.alias_version(client, cfg, reg.CHAMPION).version)
        assert first.count() == spark.createDataFrame(standard_frame()[["subject_id"]]).where(
            F.col("subject_id").isin(5, 6)).count()
        assert first.select("model_version").distinct().collect()[0][0] == champion_version
        snapshot = first.drop("scored_at").toPandas()
        assert p300(root, "score", "--alias", "champion", "--subjects", "5,6") == 0
        again = read_table(spark, cfg, "predictions").drop("scored_at")
        assert_df_equality(again, spark.createDataFrame(snapshot, again.schema), ignore_row_order=True,
                           ignore_nullable=True)
        assert p300(root, "score", "--alias", "nope") == 2
    finally:
        stop_local_server(cfg)
