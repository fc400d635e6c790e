"""`p300 score` with a model that re-centres subjects: the per-subject reference table is
written once per subject's features (unlabelled calibration: the first 20% of its epochs),
joined by batch scoring, and each prediction row says which protocol it got. A model
that does not re-centre ignores the table."""
from __future__ import annotations

import mlflow
import numpy as np
import pytest

from config_factory import make_config
from pipeline import registry as reg
from pipeline.classifiers import calibration_reference, predict_proba_with_reference
from pipeline.cli import run
from pipeline.storage import read_table, sql_name, table_version
from pipeline.subject_cv import calibration_split
from pipeline.tables import FEATURES, PREDICTIONS, SUBJECT_REFERENCE, load_features
from synth_features import standard_frame, write_features

pytestmark = [pytest.mark.spark]


def p300(root, *argv: str) -> int:
    return run(["--root", str(root), "-q", "--set", "spark.master=local[2]", "--set", "training.cv_folds=3",
                "--set", "training.n_jobs=1", *argv], environ={})


def _predictions(spark, cfg, version: int):
    frame = read_table(spark, cfg, PREDICTIONS).where(f"model_version = {version}").drop("scored_at").toPandas()
    return frame.sort_values(["subject_id", "epoch_idx"]).reset_index(drop=True)


def test_score_joins_the_subject_reference_table(spark, root):
    cfg = make_config(root)
    write_features(spark, cfg, standard_frame())
    assert p300(root, "--set", "training.classifier=xdawn_ts", "--set", "training.alignment=recenter",
                "train", "--subjects", "1-4") == 0
    client = reg.mlflow_client(cfg)
    version = int(reg.alias_version(client, cfg, reg.CHALLENGER).version)
    model = mlflow.pyfunc.load_model(reg.model_uri(cfg, version)).unwrap_python_model()

    assert p300(root, "score", "--alias", "challenger", "--subjects", "5,6") == 0
    refs = read_table(spark, cfg, SUBJECT_REFERENCE).toPandas().set_index("subject_id")
    assert sorted(refs.index) == [5, 6]
    held = load_features(spark, cfg, [5, 6], table_version(spark, cfg, FEATURES))
    preds = _predictions(spark, cfg, version)
    for sid in (5, 6):
        X = held.X[held.groups == sid]
        n_cal = calibration_split(len(X), cfg.training.calibration_fraction)
        ref = calibration_reference(model.estimator, X[:n_cal])
        row = refs.loc[sid]
        assert (row.n_epochs, row.calibration_epochs, row.n_channels) == (len(X), n_cal, ref.shape[0])
        np.testing.assert_allclose(np.asarray(row.reference).reshape(ref.shape), ref, rtol=1e-9, atol=1e-12)
        mine = preds[preds.subject_id == sid]
        assert (mine.protocol == "calibrated").all() and mine.calibration_block.tolist() == [True] * n_cal + [
            False] * (len(X) - n_cal)
        expected = predict_proba_with_reference(model.estimator, X, ref)[:, 1]
        np.testing.assert_allclose(mine.probability.to_numpy(), expected, rtol=1e-6, atol=1e-9)
        assert np.abs(mine.probability.to_numpy() - model.predict_matrix(X)[0]).max() > 1e-3  # not source-only

    # a rerun finds every reference current: the table gets no commit; the predictions are the same
    ref_version = table_version(spark, cfg, SUBJECT_REFERENCE)
    assert p300(root, "score", "--alias", "challenger", "--subjects", "5,6") == 0
    assert table_version(spark, cfg, SUBJECT_REFERENCE) == ref_version
    again = _predictions(spark, cfg, version)
    np.testing.assert_allclose(again.probability.to_numpy(), preds.probability.to_numpy(), rtol=1e-12)

    # subject 5's features change: its reference alone is recomputed
    spark.sql(f"DELETE FROM {sql_name(cfg.table(FEATURES))} WHERE subject_id = 5 AND epoch_idx < 40")
    assert p300(root, "score", "--alias", "challenger", "--subjects", "5,6") == 0
    assert table_version(spark, cfg, SUBJECT_REFERENCE) == ref_version + 1
    after = read_table(spark, cfg, SUBJECT_REFERENCE).toPandas().set_index("subject_id")
    assert after.loc[6, "created_at"] == refs.loc[6, "created_at"]
    assert after.loc[5, "created_at"] > refs.loc[5, "created_at"] and after.loc[5, "n_epochs"] < refs.loc[5, "n_epochs"]

    # a model without re-centring scores source-only and leaves the table alone
    assert p300(root, "--set", "training.classifier=lda", "train", "--subjects", "1-4") == 0
    lda_version = int(reg.alias_version(client, cfg, reg.CHALLENGER).version)
    assert p300(root, "score", "--alias", "challenger", "--subjects", "5,6") == 0
    assert table_version(spark, cfg, SUBJECT_REFERENCE) == ref_version + 1
    lda = _predictions(spark, cfg, lda_version)
    assert len(lda) and (lda.protocol == "source_only").all() and not lda.calibration_block.any()
