"""`p300 train`: selection, refusals, Arrow transfer, MLflow run, registry, lineage, plots.

One features table (6 synthetic subjects, 4 minutes, 16 channels at 128 Hz, through the
real preprocessing) is built once per module; each test copies it into its own root, so
every test has its own MLflow store and registry."""
from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from config_factory import make_config
from pipeline import plots
from pipeline import registry as reg
from pipeline.cli import run
from pipeline.report import Reporter
from pipeline.storage import read_table, table_version
from pipeline.tables import arrow_to_arrays, load_features
from pipeline.train import TrainingRefused, select_subjects
from pipeline.training_run import flatten_config
from synth_features import copy_table, standard_frame, write_features


@pytest.fixture(scope="module")
def features_cfg(spark, tmp_path_factory):
    """A root whose features table holds the standard synthetic subjects 1-6 (written once for the module)."""
    cfg = make_config(tmp_path_factory.mktemp("features") / "lakehouse")
    write_features(spark, cfg, standard_frame())
    return cfg


@pytest.fixture
def tcfg(features_cfg, cfg):
    """This test's own root (own MLflow store) with a copy of the module's features table."""
    copy_table(features_cfg, cfg)
    return cfg


def train_cli(cfg, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(["--root", cfg.root, "--set", "spark.master=local[2]", "--set", "training.cv_folds=3",
                "train", *args], environ={}, reporter=Reporter(out=out, err=err))
    return code, out.getvalue(), err.getvalue()


def nothing_logged(cfg) -> bool:
    """No registered version and no training run (no MLflow store at all counts as none)."""
    if not (cfg.local_root / "mlflow").exists():
        return True
    return registered_versions(cfg) == [] and runs_in(cfg) == []


def registered_versions(cfg) -> list:
    client = reg.mlflow_client(cfg)
    return [v for m in client.search_registered_models() for v in client.search_model_versions(f"name='{m.name}'")]


def runs_in(cfg) -> list:
    client = reg.mlflow_client(cfg)
    exp = client.get_experiment_by_name(cfg.registry.experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


# ---- the whole job ----------------------------------------------------------------------

def test_train_registers_challenger_with_lineage_and_predicts_unseen_subjects(spark, tcfg):
    code, out, err = train_cli(tcfg, "--train-fraction", "0.6")  # ceil(0.6 x 6) = 4 subjects
    assert code == 0, err
    assert "version 1" in out and "alias challenger" in out

    client = reg.mlflow_client(tcfg)
    mv = reg.alias_version(client, tcfg, reg.CHALLENGER)
    assert mv is not None and str(mv.version) == "1"
    assert mv.current_stage == "Staging"
    assert reg.training_subjects(client, mv) == [1, 2, 3, 4]

    lineage = reg.version_lineage(client, mv)
    assert lineage.features_version == table_version(spark, tcfg, "features")
    assert lineage.features_table == tcfg.table("features")
    assert lineage.n_features == 16 * tcfg.preprocess.n_times
    for name in ("cv_roc_auc", "cv_balanced_accuracy", "cv_f1_target"):
        assert 0.0 <= lineage.metrics[name] <= 1.0
    assert lineage.metrics["cv_roc_auc"] > 0.6
    assert mv.tags[reg.PARAM_TRAINING_SUBJECTS] == "1,2,3,4"

    run_ = client.get_run(mv.run_id)
    assert run_.info.experiment_id == client.get_experiment_by_name("p300-training").experiment_id
    assert run_.data.params["training.classifier"] == "xdawn_ts" == mv.tags[reg.TAG_CLASSIFIER]
    assert run_.data.params["classifier.xdawn"] == "XdawnCovariances" and mv.tags[reg.TAG_ALIGNMENT] == "none"
    assert run_.data.params["preprocess.baseline"] == "[-0.1, 0.0]"
    assert run_.data.params["cv_scheme"] == "group-3-fold"
    assert run_.info.artifact_uri.startswith((tcfg.local_root / "mlflow" / "artifacts").as_uri())
    (inp,) = run_.inputs.dataset_inputs
    assert inp.dataset.name == f"features@v{lineage.features_version}"  # MLflow drops a version 0 from source
    assert json.loads(inp.dataset.source)["path"] == tcfg.table("features")
    artifacts = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
    assert artifacts == {"plots/erp_target_vs_nontarget.png", "plots/roc_cv.png", "plots/confusion_cv.png"}
    png = Path(client.download_artifacts(mv.run_id, "plots/roc_cv.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(Path(client.download_artifacts(mv.run_id, "lineage/lineage.json")).read_text())
    assert doc["training_subjects"] == [1, 2, 3, 4] and len(doc["cv"]["folds"]) == 3

    info = mlflow.models.get_model_info(reg.alias_uri(tcfg, reg.CHALLENGER))
    spec = info.signature.inputs.inputs[0]
    assert spec.type == np.dtype(np.float32) and tuple(spec.shape) == (-1, lineage.n_features)
    assert info.signature.outputs.input_names() == ["probability", "label"]
    assert info.saved_input_example_info is not None

    # the registered model, loaded by alias, separates the two subjects it never saw
    held_out = load_features(spark, tcfg, [5, 6], lineage.features_version)
    model = mlflow.pyfunc.load_model(reg.alias_uri(tcfg, reg.CHALLENGER))
    pred = model.predict(held_out.X)
    assert list(pred.columns) == ["probability", "label"] and len(pred) == len(held_out.y)
    assert set(pred["label"]) <= {1, 2}
    assert roc_auc_score(held_out.y == 2, pred["probability"]) > 0.75


def test_no_alias_then_rerun_reuses_the_version_and_force_trains_again(tcfg):
    code, out, err = train_cli(tcfg, "--subjects", "1-3", "--no-alias")
    assert code == 0, err
    client = reg.mlflow_client(tcfg)
    assert [str(v.version) for v in registered_versions(tcfg)] == ["1"]
    assert reg.alias_version(client, tcfg, reg.CHALLENGER) is None
    assert reg.get_version(client, tcfg, 1).current_stage == "None"

    # same table version, subjects and settings: nothing is trained; the alias is set as asked
    code, out, err = train_cli(tcfg, "--subjects", "1,2,3")
    assert code == 0, err
    assert "already registered" in out
    assert len(registered_versions(tcfg)) == 1 and len(runs_in(tcfg)) == 1
    assert str(reg.alias_version(client, tcfg, reg.CHALLENGER).version) == "1"

    code, out, err = train_cli(tcfg, "--subjects", "1,2,3")  # and once more: no change at all
    assert code == 0 and len(runs_in(tcfg)) == 1

    code, out, err = train_cli(tcfg, "--subjects", "1,2,3", "--force")
    assert code == 0, err
    assert len(registered_versions(tcfg)) == 2
    assert str(reg.alias_version(client, tcfg, reg.CHALLENGER).version) == "2"


def test_a_failed_alias_after_registering_is_finished_by_a_rerun(tcfg, monkeypatch):
    """set_alias fails after log_model and register_model: the version stays, tagged with its
    fingerprint; the rerun trains nothing, registers nothing and sets the alias."""
    from mlflow.exceptions import MlflowException

    calls = []

    def refuse(client, cfg, alias, version):
        calls.append((alias, str(version)))
        raise MlflowException("alias service unavailable", error_code="TEMPORARILY_UNAVAILABLE")

    with monkeypatch.context() as m:
        m.setattr(reg, "set_alias", refuse)
        with pytest.raises(MlflowException, match="alias service unavailable"):
            train_cli(tcfg, "--subjects", "1-3")
    assert calls == [(reg.CHALLENGER, "1")]
    client = reg.mlflow_client(tcfg)
    assert [str(v.version) for v in registered_versions(tcfg)] == ["1"]
    assert reg.alias_version(client, tcfg, reg.CHALLENGER) is None  # half-way: registered, no alias

    code, out, err = train_cli(tcfg, "--subjects", "1-3")
    assert code == 0, err
    assert "already registered" in out and "alias challenger" in out
    assert [str(v.version) for v in registered_versions(tcfg)] == ["1"] and len(runs_in(tcfg)) == 1
    assert str(reg.alias_version(client, tcfg, reg.CHALLENGER).version) == "1"


# ---- refusals: a clear message, the right exit code, nothing logged or registered -------

@pytest.mark.parametrize("args, code, message", [
    (["--subjects", "1,7,9"], 2, "unknown subject ids 7,9"),
    (["--subjects", "3"], 2, "--subjects gives 1 subject"),
    (["--train-fraction", "0.1"], 1, "selects 1"),
])
def test_refusals_register_nothing(tcfg, args, code, message):
    got, out, err = train_cli(tcfg, *args)
    assert got == code
    assert message in err and "nothing registered" in err
    assert nothing_logged(tcfg)


def test_refuses_single_class(spark, features_cfg, cfg):
    frame = read_table(spark, features_cfg, "features").where("label = 1")  # NonTarget epochs only
    frame.write.format("delta").partitionBy("subject_id").save(cfg.table("features"))
    code, out, err = train_cli(cfg, "--subjects", "1,2")
    assert code == 1
    assert "NonTarget epochs only" in err
    assert nothing_logged(cfg)


@pytest.mark.spark  # train looks the features table up in a session
def test_refuses_without_features_table(cfg):
    code, out, err = train_cli(cfg)
    assert code == 1
    assert "does not exist" in err and "p300 preprocess" in err
    assert nothing_logged(cfg)


def test_refuses_too_few_processed_subjects(spark, features_cfg, cfg):
    read_table(spark, features_cfg, "features").where("subject_id = 2") \
        .write.format("delta").partitionBy("subject_id").save(cfg.table("features"))
    code, out, err = train_cli(cfg)
    assert code == 1
    assert "only 1 processed subject(s) (2)" in err
    assert nothing_logged(cfg)


def test_reads_the_recorded_table_version(spark, tcfg):
    """Rows appended after the version was taken never reach the matrix."""
    v0 = table_version(spark, tcfg, "features")
    first = load_features(spark, tcfg, [1, 2], v0)
    extra = read_table(spark, tcfg, "features").where("subject_id = 1")
    extra.write.format("delta").mode("append").save(tcfg.table("features"))
    again = load_features(spark, tcfg, [1, 2], v0)
    assert again.table_version == v0 and again.X.shape == first.X.shape
    np.testing.assert_array_equal(again.X, first.X)
    assert load_features(spark, tcfg, [1, 2], v0 + 1).X.shape[0] > first.X.shape[0]
    assert first.X.dtype == np.float32 and first.X.flags.c_contiguous
    assert np.all(np.diff(first.groups) >= 0)  # ordered by subject, then epoch
    assert all(np.all(np.diff(first.epoch_idx[first.groups == s]) > 0) for s in (1, 2))


# ---- pure pieces -------------------------------------------------------------------------

@pytest.mark.parametrize("fraction, n, expected", [(0.3, 10, 3), (0.5, 5, 3), (1.0, 4, 4), (0.34, 6, 3)])
def test_fraction_takes_first_ceil_subjects_in_id_order(fraction, n, expected):
    available = list(range(20, 20 - n, -1))  # unordered input
    assert select_subjects(available, fraction=fraction) == sorted(available)[:expected]


def test_select_subjects_respects_min_subjects():
    with pytest.raises(TrainingRefused, match="at least 3 subjects"):
        select_subjects([1, 2, 3, 4], fraction=0.5, min_subjects=3)
    assert select_subjects([1, 2, 3, 4], requested=[4, 2], min_subjects=2) == [2, 4]


def test_arrow_to_arrays_fills_one_float32_matrix_across_chunks():
    def batch(sid, rows):
        return pa.record_batch({
            "subject_id": pa.array([sid] * len(rows), pa.int32()), "epoch_idx": pa.array(range(len(rows)), pa.int32()),
            "label": pa.array([1, 2][: len(rows)], pa.int32()),
            "features": pa.array(rows, pa.list_(pa.float32()))})
    table = pa.Table.from_batches([batch(1, [[1, 2, 3], [4, 5, 6]]), batch(2, [[7, 8, 9]])])
    X, y, groups, epochs = arrow_to_arrays(table)
    np.testing.assert_array_equal(X, np.arange(1, 10, dtype=np.float32).reshape(3, 3))
    assert X.dtype == np.float32
    assert y.tolist() == [1, 2, 1] and groups.tolist() == [1, 1, 2] and epochs.tolist() == [0, 1, 0]

    ragged = pa.Table.from_batches([batch(1, [[1, 2, 3], [4, 5]])])
    with pytest.raises(ValueError, match="different lengths"):
        arrow_to_arrays(ragged)


def test_flatten_config_is_complete_and_redacts_secrets(root):
    cfg = make_config(root, **{"serving.token": "s3cret"})
    flat = flatten_config(cfg)
    assert flat["serving.token"] == "***" and "s3cret" not in json.dumps(flat)
    assert flat["training.cv_folds"] == "5" and flat["registry.model_name"] == "p300-classifier"
    assert len(flat) == sum(1 for _ in _leaves(cfg.dump()))


def _leaves(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaves(v)
    else:
        yield node


# ---- registry helpers ----------------------------------------------------------------------

def test_stage_is_skipped_where_the_registry_has_none(root):
    uc = make_config(root, **{"registry.registry_uri": "databricks-uc", "registry.model_name": "main.p300.m"})
    assert reg.registry_has_stages(uc) is False
    assert reg.set_stage(None, uc, 1, "Staging") is False  # never calls the registry
    assert reg.registry_has_stages(make_config(root)) is True


def test_alias_helpers_on_a_missing_model(cfg):
    client = reg.mlflow_client(cfg)
    assert reg.alias_version(client, cfg, reg.CHAMPION) is None
    assert reg.clear_alias(client, cfg, reg.CHAMPION) is False
    assert reg.get_version(client, cfg, 3) is None
    assert reg.find_version_by_tag(client, cfg, reg.TAG_FINGERPRINT, "x") is None
    assert reg.parse_subjects("3,1,2") == [1, 2, 3] and reg.format_subjects([3, 1, 1]) == "1,3"


def test_mlflow_environment_variables_configure_the_registry(root):
    from pipeline.config import load_config

    cfg = load_config(root=str(root), env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999"})
    assert cfg.tracking_uri == cfg.registry_uri == "http://127.0.0.1:5999"
    assert cfg.artifact_location is None  # the server decides
    cfg = load_config(root=str(root), env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
                                           "P300__REGISTRY__TRACKING_URI": "http://127.0.0.1:6000",
                                           "MLFLOW_REGISTRY_URI": "databricks-uc",
                                           "P300__REGISTRY__MODEL_NAME": "main.p300.p300_classifier"})
    assert cfg.tracking_uri == "http://127.0.0.1:6000" and cfg.registry_uri == "databricks-uc"


# ---- plots ------------------------------------------------------------------------------

def test_grand_average_reads_one_channel_block():
    n_times = 3
    X = np.zeros((4, 2 * n_times), dtype=np.float32)
    X[:, n_times:] = [[1, 2, 3], [3, 4, 5], [0, 0, 0], [2, 2, 2]]  # channel 1
    y = np.array([2, 2, 1, 1])
    tm, ts, nm, ns = plots.grand_average(X, y, n_times, channel=1)
    np.testing.assert_allclose(tm, [2, 3, 4])
    np.testing.assert_allclose(nm, [1, 1, 1])
    np.testing.assert_allclose(ts, [1, 1, 1])  # std 1.414 / sqrt(2)
    with pytest.raises(ValueError, match="outside"):
        plots.grand_average(X, y, n_times, channel=2)


def test_plot_functions_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([1] * 30 + [2] * 10)
    scores = np.r_[rng.uniform(0, 0.6, 30), rng.uniform(0.4, 1, 10)]
    figs = {
        "roc": plots.roc_figure(y, scores),
        "compare": plots.roc_compare_figure({"champion": (y, scores), "challenger": (y, 1 - scores)}),
        "confusion": plots.confusion_figure(y, np.where(scores > 0.5, 2, 1)),
        "erp": plots.erp_figure(np.linspace(-0.1, 0.6, 71), np.sin(np.arange(71) / 10), np.zeros(71), "eeg_ch11"),
    }
    for name, fig in figs.items():
        path = plots.save_png(fig, tmp_path / f"{name}.png")
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000
    legend = [t.get_text() for t in figs["compare"].axes[0].get_legend().get_texts()]
    assert legend[0].startswith("champion (AUC") and legend[1].startswith("challenger (AUC")


def test_erp_channel_falls_back_to_the_largest_difference_when_absent(root):
    from pipeline.training_run import _erp_channel

    cfg = make_config(root)  # erp_channel eeg_ch11
    n_times = cfg.preprocess.n_times
    X = np.zeros((4, 3 * n_times), dtype=np.float32)
    X[:2, 2 * n_times + 30] = 5.0  # targets differ on the third channel
    y = np.array([2, 2, 1, 1])
    idx, name = _erp_channel(cfg, 3, X, y)
    assert idx == 2 and name.startswith("eeg_ch3 (largest difference")
    assert _erp_channel(cfg, 16, np.zeros((4, 16 * n_times), np.float32), y) == (10, "eeg_ch11")


@pytest.mark.slow  # logs a (tiny) MLflow model
def test_registration_leaves_mlflow_notices_out_unless_verbose(cfg, capsys):
    import sys

    from mlflow.pyfunc import PythonModel

    class Constant(PythonModel):
        def predict(self, context, model_input: list[float]) -> list[float]:
            return [0.5 for _ in model_input]

    client = reg.mlflow_client(cfg)
    with mlflow.start_run(experiment_id=reg.ensure_experiment(client, cfg, cfg.registry.experiment)):
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    print("a line of the caller's own", file=sys.stderr)
    assert str(reg.register_model(cfg, info.model_uri, {"k": "v"}).version) == "1"
    verbose = cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"quiet": False})})
    assert str(reg.register_model(verbose, info.model_uri, {}).version) == "2"
    err = capsys.readouterr().err
    assert "a line of the caller's own" in err
    assert "Successfully registered model" not in err and "Created version '1'" not in err
    assert "Created version '2'" in err  # --verbose: MLflow's own lines as it prints them
    assert client.get_model_version(cfg.registry.model_name, "1").tags["k"] == "v"
