"""`p300 compare` end to end: features table -> leave-one-subject-out over candidates ->
one MLflow run with the per-subject table, the summary metrics and plots -> the winner
written into an overlay that the next `p300 train` reads."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from pipeline import registry as reg
from pipeline.cli import run
from pipeline.report import Reporter
from synth_features import standard_frame, write_features

pytestmark = pytest.mark.spark


def cli(cfg, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(["--root", cfg.root, "--set", "spark.master=local[2]", "--set", "training.n_jobs=1", *args],
               environ={}, reporter=Reporter(out=out, err=err))
    return code, out.getvalue(), err.getvalue()


def test_compare_logs_the_table_and_hands_the_winner_to_train(spark, cfg, tmp_path):
    write_features(spark, cfg, standard_frame())
    overlay = tmp_path / "winner.yaml"
    overlay.write_text(yaml.safe_dump({"training": {"cv_folds": 3}}))
    code, out, err = cli(cfg, "compare", "--candidates", "lda,xdawn_ts", "--subjects", "1-4",
                         "--write-conf", str(overlay))
    assert code == 0, err
    assert "ROC AUC per left-out subject" in out and "compare: winner" in out

    client = reg.mlflow_client(cfg)
    exp = client.get_experiment_by_name(cfg.registry.experiment)
    (run_,) = client.search_runs([exp.experiment_id], "tags.`p300.job` = 'compare'")
    winner = run_.data.tags["p300.compare.winner"]
    assert winner in ("lda", "xdawn_ts") and f"winner {winner}" in out
    metrics = run_.data.metrics
    for name in ("lda", "xdawn_ts"):
        for protocol in ("trialwise", "calibration"):
            assert 0.5 < metrics[f"{name}.{protocol}.roc_auc_subject_min"] <= \
                metrics[f"{name}.{protocol}.roc_auc_subject_mean"] <= 1.0
    best = max(("lda", "xdawn_ts"), key=lambda n: metrics[f"{n}.trialwise.roc_auc_subject_mean"])
    assert winner == best
    table = json.loads(Path(client.download_artifacts(run_.info.run_id, "per_subject_auc.json")).read_text())
    rows = [dict(zip(table["columns"], r)) for r in table["data"]]
    assert len(rows) == 2 * 4 * 2 and {r["subject"] for r in rows} == {1, 2, 3, 4}
    plots = {a.path for a in client.list_artifacts(run_.info.run_id, "plots")}
    assert plots == {"plots/per_subject_auc_trialwise.png", "plots/per_subject_auc_calibration.png"}

    # the overlay keeps its keys and names the winner; train reads it
    written = yaml.safe_load(overlay.read_text())
    assert written["training"] == {"cv_folds": 3, "classifier": winner, "alignment": "none"}
    code, out, err = cli(cfg, "--conf", str(overlay), "train", "--subjects", "1-4")
    assert code == 0, err
    mv = reg.alias_version(client, cfg, reg.CHALLENGER)
    assert mv.tags[reg.TAG_CLASSIFIER] == winner


def test_compare_refuses_unknown_candidates_and_subjects(spark, cfg, capsys):
    write_features(spark, cfg, standard_frame())
    code, _, _ = cli(cfg, "compare", "--candidates", "lda,forest")
    assert code == 2 and "unknown classifier 'forest'" in capsys.readouterr().err  # usage errors: the CLI's stderr
    code, _, _ = cli(cfg, "compare", "--subjects", "1,9")
    assert code == 2 and "[9] have no features" in capsys.readouterr().err
