"""`p300 monitor` on an inference log written by the server's own writer: the tables'
rows (checked with chispa), drift where the inputs drifted, idempotent reruns, the flag."""
from __future__ import annotations

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from monitor_fixtures import log_requests, now_ms, register_with_lineage, window_start
from pipeline.monitor import monitor
from pipeline.report import Reporter
from pipeline.retrain_flag import retrain_requested
from pipeline.storage import read_table, table_version

from config_factory import make_config  # noqa: E402  (the config factory, not a fixture)

NORMAL = {"gain": 1.0, "signal": 1.5}
DRIFTED = {"gain": 2.5, "signal": 0.3}  # a louder headset, a weaker P300


@pytest.fixture
def mcfg(root):
    return make_config(root, **{"monitoring.window_s": "60", "monitoring.lateness_s": "0",
                                "monitoring.rule.metric": "score_psi", "monitoring.rule.threshold": "0.2"})


def test_monitor_profiles_windows_and_fires_on_drift(spark, mcfg, tmp_path, monkeypatch):
    version = register_with_lineage(spark, mcfg)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    now = now_ms()
    start = window_start(mcfg, now, back=6)
    labels = log_requests(mcfg, version, [NORMAL, NORMAL, DRIFTED, DRIFTED, DRIFTED], start)
    spark.createDataFrame(labels).write.format("delta").save(mcfg.table("labels"))

    result = monitor(mcfg, Reporter(quiet=True), now_ms=now)
    assert result.processed == 5
    assert result.outcome is not None and result.outcome.fired
    assert result.outcome.violations == (False, False, True, True, True)

    profile = read_table(spark, mcfg, "monitor_profile")
    got = (profile.where(F.col("column_name") == ":table")
           .select(F.unix_millis("window.start").alias("start"), "model_id", "slice_value", "count", "epoch_count",
                   "labeled_count", "error_rate")
           .orderBy("start"))
    model_id = f"{mcfg.registry.model_name}/{version}"
    expected = spark.createDataFrame(
        [(start + w * 60_000, model_id, "champion", 5, 100, 100, 0.2) for w in range(5)], got.schema)
    assert_df_equality(got, expected, ignore_nullable=True)
    channels = profile.where(F.col("column_name").startswith("rms_")).select("column_name").distinct()
    assert sorted(r[0] for r in channels.collect()) == ["rms_ch1", "rms_ch2", "rms_ch3", "rms_ch4"]

    m = result.metrics.set_index("window_start")
    assert (m["score_psi"].iloc[2:] > 0.2).all() and (m["score_psi"].iloc[:2] < 0.2).all()
    assert (m["rms_psi_max"].iloc[2:] > m["rms_psi_max"].iloc[:2].max()).all()
    assert m["roc_auc"].iloc[:2].min() > m["roc_auc"].iloc[2:].max()  # the drifted cohort scores worse
    assert retrain_requested(mcfg)[0]

    versions = {t: table_version(spark, mcfg, t) for t in ("monitor_profile", "monitor_drift", "monitor_flags")}
    again = monitor(mcfg, Reporter(quiet=True), now_ms=now)
    assert again.processed == 0
    assert {t: table_version(spark, mcfg, t) for t in versions} == versions  # a rerun writes nothing
    assert not list(scratch.iterdir())  # no temporary files left behind


def test_input_drift_comes_from_a_deterministic_sample_of_requests(spark, root):
    """monitoring.input_sample_epochs: channel RMS from whole requests holding about that many
    epochs per window; scores, counts and AUC from every epoch; the same sample on every run."""
    cfg = make_config(root, **{"monitoring.window_s": "60", "monitoring.lateness_s": "0",
                               "monitoring.input_sample_epochs": "40"})
    version = register_with_lineage(spark, cfg)
    now = now_ms()
    start = window_start(cfg, now, back=3)
    log_requests(cfg, version, [NORMAL, DRIFTED], start, per_window=8)  # 8 requests x 25 epochs each

    def counts():
        profile = read_table(spark, cfg, "monitor_profile")
        return {(r["start"], r["column_name"]): r["count"] for r in profile.where(
            F.col("column_name").isin(":table", "score", "rms_ch1")).select(
            F.unix_millis("window.start").alias("start"), "column_name",
            F.coalesce("epoch_count", "count").alias("count")).collect()}

    result = monitor(cfg, Reporter(quiet=True), now_ms=now)
    assert result.processed == 2
    first = counts()
    for w in range(2):
        s = start + w * 60_000
        assert first[(s, ":table")] == first[(s, "score")] == 200
        assert first[(s, "rms_ch1")] == 50  # whole requests (25 epochs each) until 40 epochs are in
    m = result.metrics.set_index("window_start")
    assert m["rms_psi_max"].iloc[1] > 2 * m["rms_psi_max"].iloc[0]  # the sample still sees the louder headset

    for t in ("monitor_profile", "monitor_drift"):  # a full redo draws the same requests
        spark.sql(f"DELETE FROM delta.`{cfg.table(t)}`")
    monitor(cfg, Reporter(quiet=True), now_ms=now)
    assert counts() == first


def test_monitor_waits_for_open_windows_and_redoes_late_ones(spark, mcfg):
    version = register_with_lineage(spark, mcfg)
    now = now_ms()
    start = window_start(mcfg, now, back=1)  # the last window closed, the current one open
    log_requests(mcfg, version, [NORMAL, NORMAL], start)
    first = monitor(mcfg, Reporter(quiet=True), now_ms=now)
    assert first.processed == 1
    log_requests(mcfg, version, [NORMAL], start, per_window=2)  # late rows in the processed window
    second = monitor(mcfg, Reporter(quiet=True), now_ms=now)
    assert second.processed == 1
    counts = (read_table(spark, mcfg, "monitor_profile").where(F.col("column_name") == ":table")
              .select("count").collect())
    assert [r[0] for r in counts] == [5 + 3]


def test_monitor_and_retrain_does_nothing_without_the_flag(spark, root, capsys):
    from pipeline.cli import run

    code = run(["--root", str(root), "--set", "spark.master=local[2]", "job", "monitor_and_retrain"], environ={})
    out = capsys.readouterr().out
    assert code == 0
    assert "no inference log" in out
    assert "flag 'retrain' not set" in out and "not run: train, deploy, evaluate" in out
