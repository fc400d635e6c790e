"""The classifier registry, per-subject re-centring, the comparison's protocols and the
pyfunc's reference params, on preprocessed synthetic subjects (no Spark, no MLflow server)."""
from __future__ import annotations

import typing

import numpy as np
import pytest

from pipeline.classifiers import (CLASSIFIERS, Epochs, SubjectRecenter, build_classifier, calibration_reference,
                                  classifier_params, fit_params, is_target, parse_candidate,
                                  predict_proba_with_reference, subject_reference)
from pipeline.config import ClassifierName, ConfigError, load_config
from pipeline.metrics import per_subject_auc, roc_auc, subject_summary
from pipeline.model import P300Model, model_signature
from pipeline.subject_cv import ProtocolScorer, calibration_split, compare_candidates, group_cv
from synth_features import features_frame

N_TIMES = 71
SUBJECTS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def data():
    """Four subjects, 3 minutes, 8 channels at 128 Hz, through the real preprocessing; labels
    as the pipelines learn them (1 Target, 0 NonTarget)."""
    frame = features_frame(SUBJECTS, minutes=3.0, n_channels=8, sfreq=128.0)
    X = np.stack([np.asarray(v, dtype=np.float32) for v in frame["features"]])
    return X, is_target(frame["label"].to_numpy(np.int64), 2), frame["subject_id"].to_numpy(np.int64)


def test_config_names_are_the_registry_names_and_old_model_values_still_work(tmp_path):
    assert set(typing.get_args(ClassifierName)) == set(CLASSIFIERS)
    cfg = load_config(root=str(tmp_path), env={}, overrides={"training.model": "shrinkage_lda"})
    assert cfg.training.classifier == "lda"
    assert load_config(root=str(tmp_path), env={}, overrides={"training.model": "lda"}).training.classifier == "lda_plain"
    with pytest.raises(ConfigError, match="training.classifier"):
        load_config(root=str(tmp_path), env={}, overrides={"training.classifier": "svm"})
    with pytest.raises(ConfigError, match="training.classifier"):
        load_config(root=str(tmp_path), env={}, overrides={"training.model": "svm"})


def test_epochs_reshape_follows_n_times_and_refuses_partial_channels():
    X = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 15)
    out = Epochs(5).fit(X).transform(X)
    assert out.shape == (2, 3, 5) and out[1, 2, 4] == X[1, 14]
    with pytest.raises(ValueError, match="whole number of channels"):
        Epochs(4).fit(X)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown classifier"):
        build_classifier("svm", N_TIMES)
    with pytest.raises(ValueError, match="unknown alignment"):
        parse_candidate("lda+whiten")
    assert parse_candidate("xdawn_ts+recenter").name == "xdawn_ts+recenter"


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_every_classifier_separates_an_unseen_subject(data, name):
    X, y, g = data
    pipe = build_classifier(name, N_TIMES)
    train = g != 4
    pipe.fit(X[train], y[train], **fit_params(pipe, g[train]))
    proba = pipe.predict_proba(X[~train])[:, 1]
    assert roc_auc(y[~train] == 1, proba) > (0.65 if name == "lda_plain" else 0.75)  # plain LDA overfits
    params = classifier_params(pipe)
    assert params["classifier.epochs.n_times"] == str(N_TIMES)


def test_recenter_puts_each_training_subject_at_identity(data):
    X, y, g = data
    epochs = Epochs(N_TIMES).fit(X).transform(X).astype(np.float64)
    step = SubjectRecenter()
    out = step.fit_transform(epochs, y, groups=g)
    from pyriemann.utils.distance import distance_riemann

    eye = np.eye(epochs.shape[1])
    for s in SUBJECTS:  # near identity (shrinkage of each epoch's covariance keeps it from being exact)
        before = distance_riemann(subject_reference(epochs[g == s]), eye)
        after = distance_riemann(subject_reference(out[g == s]), eye)
        assert after < 0.1 * before and after < 0.5
    assert step.n_subjects_ == len(SUBJECTS)
    # source-only: the training subjects' mean reference, the same for every batch
    np.testing.assert_allclose(step.transform(epochs[:3]), SubjectRecenter.apply(epochs[:3], step.source_reference_))


def test_a_reference_changes_the_recentred_models_scores_only(data):
    X, y, g = data
    train, test = g != 4, g == 4
    aligned = build_classifier("xdawn_ts", N_TIMES, "recenter")
    aligned.fit(X[train], y[train], **fit_params(aligned, g[train]))
    ref = calibration_reference(aligned, X[test][:40])
    assert ref.shape == (8, 8)
    source = predict_proba_with_reference(aligned, X[test], None)
    calibrated = predict_proba_with_reference(aligned, X[test], ref)
    assert not np.allclose(source, calibrated)
    np.testing.assert_allclose(predict_proba_with_reference(aligned, X[test], ref.ravel()), calibrated)
    with pytest.raises(ValueError, match="8 x 8"):
        predict_proba_with_reference(aligned, X[test], np.eye(3))
    plain = build_classifier("lda", N_TIMES).fit(X[train], y[train])
    assert calibration_reference(plain, X[test]) is None
    np.testing.assert_allclose(predict_proba_with_reference(plain, X[test], ref), plain.predict_proba(X[test]))


def test_model_takes_the_reference_or_a_calibration_block_through_params(data):
    X, y, g = data
    train, test = g != 4, g == 4
    pipe = build_classifier("xdawn_ts", N_TIMES, "recenter")
    pipe.fit(X[train], y[train], **fit_params(pipe, g[train]))
    model = P300Model(pipe, X.shape[1], classifier="xdawn_ts")  # labels out: Target 2, NonTarget 1
    assert model.alignment == "recenter"
    block = X[test][:30]
    ref = calibration_reference(pipe, block)
    by_block = model.predict(None, X[test][30:], params={"calibration": block.ravel().tolist()})
    by_ref = model.predict(None, X[test][30:], params={"reference": ref.ravel().tolist()})
    np.testing.assert_allclose(by_block["probability"], by_ref["probability"])
    source = model.predict(None, X[test][30:], params={"reference": [], "calibration": []})
    np.testing.assert_allclose(source["probability"], model.predict(None, X[test][30:])["probability"])
    with pytest.raises(ValueError, match="whole number of epochs"):  # InputError: the endpoint answers 400
        model.predict(None, X[test][:2], params={"calibration": [1.0, 2.0]})
    with pytest.raises(ValueError, match="8 channels"):
        model.predict(None, X[test][:2], params={"reference": np.eye(3).ravel().tolist()})
    with pytest.raises(ValueError, match="positive definite"):
        model.predict(None, X[test][:2], params={"reference": (-np.eye(8)).ravel().tolist()})
    names = [p.name for p in model_signature(X.shape[1]).params.params]
    assert names == ["reference", "calibration"]


@pytest.mark.slow  # cross-validation over the subjects
def test_group_cv_is_subject_grouped_and_pooled(data):
    X, y, g = data
    cv = group_cv(build_classifier("lda", N_TIMES), X, y, g, folds=2, target=1, nontarget=0, n_jobs=1)
    assert cv.scheme == "group-2-fold" and len(cv.folds) == 2
    assert sorted(s for f in cv.folds for s in f["test_subjects"]) == list(SUBJECTS)
    assert cv.metrics["cv_roc_auc"] == pytest.approx(roc_auc(y == 1, cv.oof_proba))
    assert np.isfinite(cv.oof_proba).all()


def test_calibration_protocol_scores_only_the_epochs_after_the_block(data):
    X, y, g = data
    assert calibration_split(10, 0.2) == 2 and calibration_split(2, 0.9) == 1 and calibration_split(3, 0.01) == 1
    train, test = g != 4, g == 4
    pipe = build_classifier("lda", N_TIMES).fit(X[train], y[train])
    n_cal = calibration_split(int(test.sum()), 0.2)
    rest = roc_auc(y[test][n_cal:] == 1, pipe.predict_proba(X[test][n_cal:])[:, 1])
    assert ProtocolScorer("calibration")(pipe, X[test], y[test]) == pytest.approx(rest)
    assert ProtocolScorer("trialwise")(pipe, X[test], y[test]) == pytest.approx(
        roc_auc(y[test] == 1, pipe.predict_proba(X[test])[:, 1]))


@pytest.mark.slow  # leave-one-subject-out over every candidate
def test_compare_candidates_leaves_each_subject_out_once(data):
    X, y, g = data
    cands = [parse_candidate(c) for c in ("lda", "xdawn_ts+recenter")]
    seen = []
    result = compare_candidates(cands, X, y, g, N_TIMES, 1, n_jobs=1, progress=lambda i, n, name: seen.append(name))
    assert seen == ["lda", "xdawn_ts+recenter", "done"]
    table = result.per_subject
    assert len(table) == len(cands) * len(SUBJECTS) * 2
    assert sorted(table["subject"].unique()) == list(SUBJECTS)
    assert set(table["protocol"]) == {"trialwise", "calibration"}
    assert (table["roc_auc"] > 0.55).all()  # 3 minutes per subject: weak, but above chance
    row = result.summary.set_index(["candidate", "protocol"]).loc[("lda", "trialwise")]
    lda = table[(table["candidate"] == "lda") & (table["protocol"] == "trialwise")]
    assert row["roc_auc_subject_mean"] == pytest.approx(lda["roc_auc"].mean())
    assert row["roc_auc_subject_min"] == pytest.approx(lda["roc_auc"].min())
    best = result.summary[result.summary["protocol"] == "trialwise"].sort_values("roc_auc_subject_mean").iloc[-1]
    assert result.winner == best["candidate"] and result.ranked_by == "trialwise"
    with pytest.raises(ValueError, match="at least 3 subjects"):
        compare_candidates(cands, X[g < 3], y[g < 3], g[g < 3], N_TIMES, 1)


def test_per_subject_metrics_skip_undefined_subjects():
    g = np.array([1, 1, 2, 2, 3, 3])
    is_t = np.array([1, 0, 1, 0, 0, 0], dtype=bool)
    score = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.5])
    per = per_subject_auc(g, is_t, score)
    assert per[1] == 1.0 and per[2] == 0.0 and np.isnan(per[3])
    assert subject_summary(per) == {"roc_auc_subject_mean": 0.5, "roc_auc_subject_min": 0.0}
    assert subject_summary({1: float("nan")}) == {}


@pytest.mark.parametrize("alignment", ["none", "recenter"])
def test_a_flat_epoch_gets_a_score_not_an_error(data, alignment):
    """The endpoint warms a model up with zeros; a dead channel gives zero variance too."""
    X, y, g = data
    pipe = build_classifier("xdawn_ts", N_TIMES, alignment)
    pipe.fit(X, y, **fit_params(pipe, g))
    flat = np.zeros((2, X.shape[1]), np.float32)
    flat[1, :N_TIMES] = X[0, :N_TIMES]  # one live channel, the others dead
    assert np.isfinite(pipe.predict_proba(flat)).all()


def test_xdawn_covariances_match_pyriemanns_computed_for_all_epochs_at_once(data):
    """The same matrices as pyRiemann's XdawnCovariances with the same estimator, which
    calls a callable estimator once per epoch (the reason this step exists)."""
    from pyriemann.estimation import XdawnCovariances as PyRiemannXdawnCovariances

    from pipeline.classifiers import XdawnCovariances, shrunk_covariances

    X, y, _ = data
    epochs = Epochs(N_TIMES).fit(X).transform(X).astype(np.float64)
    ours = XdawnCovariances(nfilter=3, classes=[1]).fit(epochs, y)
    theirs = PyRiemannXdawnCovariances(nfilter=3, classes=[1], estimator=shrunk_covariances,
                                       xdawn_estimator="lwf").fit(epochs, y)
    got = ours.transform(epochs[:50])
    assert got.shape == (50, 6, 6)
    np.testing.assert_allclose(got, theirs.transform(epochs[:50]), rtol=1e-7, atol=1e-9 * np.abs(got).max())


def test_shrunk_covariances_are_pyriemanns_schaefer_strimmer_plus_the_ridge():
    from pyriemann.geometry.covariance import covariance_sch

    from pipeline.classifiers import shrunk_covariances

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 6, 71)) * rng.uniform(0.1, 50, (20, 6, 1)) + 3 * rng.standard_normal((20, 1, 71))
    expected = covariance_sch(X)
    expected += (1e-6 * np.trace(expected, axis1=-2, axis2=-1) / 6 + 1e-12)[:, None, None] * np.eye(6)
    np.testing.assert_allclose(shrunk_covariances(X), expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    X[3, 2] = 0.0  # a dead channel: no shrinkage target, still SPD
    assert np.linalg.eigvalsh(shrunk_covariances(X)).min() > 0
