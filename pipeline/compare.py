"""`p300 compare`: which classifier meets new subjects best, leave one subject out.

Every candidate of ``training.candidates`` (``classifier`` or ``classifier+alignment``)
is fitted on all subjects but one and scored on that one, for every subject of the
features table (or ``--subjects``), with the same folds for all candidates. Each left-out
subject is scored under two protocols (pipeline/subject_cv.py): ``trialwise``
(source-only, what a stateless endpoint sees) and ``calibration`` (a reference from the
first ``training.calibration_fraction`` of its epochs, unlabelled, the rest scored).

One MLflow run (experiment ``registry.experiment``, tag ``p300.job=compare``) gets the
per-subject table, each candidate's mean and minimum per-subject ROC AUC per protocol,
and a plot. The winner (best mean under ``training.compare_protocol``) becomes the next
training's classifier with ``--write-conf FILE``: the file (created, or updated keeping
its other keys) is an overlay for ``p300 --conf FILE train``; without it the command
prints the equivalent ``--set`` arguments.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from pipeline.classifiers import Candidate, parse_candidate
from pipeline.config import Config, ConfigError
from pipeline.report import Reporter

__all__ = ["main", "write_winner", "candidates_from"]


def candidates_from(texts: list[str]) -> list[Candidate]:
    try:
        out = [parse_candidate(t) for t in texts]
    except ValueError as exc:
        raise ConfigError(f"compare candidates: {exc}") from None
    if len({c.name for c in out}) != len(out) or not out:
        raise ConfigError(f"compare candidates must be distinct and not empty, got {texts}")
    return out


def write_winner(path: Path, winner: Candidate) -> None:
    """Set training.classifier and training.alignment in a YAML overlay, keeping its other keys."""
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    data = data if isinstance(data, dict) else {}
    training = data.setdefault("training", {})
    training.update({"classifier": winner.classifier, "alignment": winner.alignment})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


def _metric_key(candidate: str, protocol: str, stat: str) -> str:
    return f"{candidate.replace('+', '_')}.{protocol}.roc_auc_subject_{stat}"


def _log(cfg: Config, comparison, candidates: list[Candidate], table: str, version: int, subjects: list[int]) -> str:
    import mlflow

    from pipeline import plots
    from pipeline.registry import ensure_experiment, mlflow_client

    client = mlflow_client(cfg)
    experiment_id = ensure_experiment(client, cfg, cfg.registry.experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"compare-features-v{version}") as run:
        mlflow.set_tags({"p300.job": "compare", "p300.compare.winner": comparison.winner,
                         "p300.compare.ranked_by": comparison.ranked_by})
        mlflow.log_params({"candidates": ",".join(c.name for c in candidates), "features_table": table,
                           "features_table_version": version, "subjects": ",".join(map(str, subjects)),
                           "cv_scheme": "leave-one-subject-out", "calibration_fraction": cfg.training.calibration_fraction,
                           "ranked_by": comparison.ranked_by, "winner": comparison.winner})
        metrics = {"seconds": comparison.seconds}
        for row in comparison.summary.itertuples():
            metrics[_metric_key(row.candidate, row.protocol, "mean")] = row.roc_auc_subject_mean
            metrics[_metric_key(row.candidate, row.protocol, "min")] = row.roc_auc_subject_min
        mlflow.log_metrics(metrics)
        mlflow.log_table(comparison.per_subject, "per_subject_auc.json")
        mlflow.log_table(comparison.summary, "summary.json")
        for protocol in comparison.per_subject["protocol"].unique():
            part = comparison.per_subject[comparison.per_subject["protocol"] == protocol]
            curves = {name: dict(zip(g["subject"], g["roc_auc"])) for name, g in part.groupby("candidate", sort=False)}
            mlflow.log_figure(plots.per_subject_figure(curves, title=f"ROC AUC per left-out subject ({protocol})"),
                              f"plots/per_subject_auc_{protocol}.png")
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "per_subject_auc.csv").write_text(comparison.per_subject.to_csv(index=False))
            mlflow.log_artifact(str(Path(tmp, "per_subject_auc.csv")))
        return run.info.run_id


def main(cfg: Config, args: argparse.Namespace, rep: Reporter) -> int:
    """`p300 compare [--candidates a,b+recenter] [--subjects ..] [--write-conf FILE]`."""
    from pipeline.spark import get_spark
    from pipeline.storage import table_version
    from pipeline.subject_cv import compare_candidates
    from pipeline.tables import FEATURES, feature_subjects, load_features

    texts = args.candidates.split(",") if getattr(args, "candidates", None) else list(cfg.training.candidates)
    candidates = candidates_from(texts)
    spark = get_spark(cfg)
    version = table_version(spark, cfg, FEATURES)
    if version is None:
        raise ConfigError(f"features table {cfg.table(FEATURES)} does not exist: run `p300 ingest` and "
                          "`p300 preprocess` first")
    available = feature_subjects(spark, cfg, version)
    subjects = getattr(args, "subjects", None) or available
    unknown = sorted(set(subjects) - set(available))
    if unknown:
        raise ConfigError(f"--subjects: {unknown} have no features (processed subjects: {available})")
    with rep.stage(f"loading {len(subjects)} subjects' features (version {version})"):
        try:
            data = load_features(spark, cfg, subjects, version)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    rep.info(f"leave-one-subject-out over {len(subjects)} subjects, {len(data.y)} epochs; candidates: "
             + ", ".join(c.name for c in candidates))
    with rep.stage("comparing"):
        try:
            comparison = compare_candidates(
                candidates, data.X, data.y, data.groups, cfg.preprocess.n_times, cfg.signal.event_ids.target,
                cfg.training.calibration_fraction, cfg.training.compare_protocol, cfg.training.n_jobs,
                progress=lambda i, n, name: rep.progress(i, n, "candidates", unit=None) if i < n else None)
        except ValueError as exc:
            raise ConfigError(f"compare: {exc}") from None
    run_id = _log(cfg, comparison, candidates, data.table, version, subjects)
    wide = comparison.per_subject.pivot_table(index="subject", columns=["candidate", "protocol"], values="roc_auc",
                                              sort=False)
    ranked = comparison.ranked_by
    names = [c.name for c in candidates]
    rep.table([[int(s)] + [wide.loc[s, (n, ranked)] for n in names] for s in wide.index], ["subject"] + names,
              title=f"compare: ROC AUC per left-out subject ({ranked} protocol)")
    rep.table([[r.candidate, r.protocol, r.roc_auc_subject_mean, r.roc_auc_subject_min, r.fit_seconds]
               for r in comparison.summary.itertuples()],
              ["candidate", "protocol", "mean AUC", "min AUC", "fit s/fold"], title="compare: per-subject summary")
    winner = next(c for c in candidates if c.name == comparison.winner)
    rep.result(f"compare: winner {winner.name} (best mean per-subject ROC AUC, {ranked} protocol); MLflow run {run_id}")
    if getattr(args, "write_conf", None):
        write_winner(Path(args.write_conf), winner)
        rep.result(f"compare: wrote training.classifier={winner.classifier}, training.alignment={winner.alignment} "
                   f"to {args.write_conf}; train with `p300 --conf {args.write_conf} train`")
    else:
        rep.result(f"compare: to train it: p300 --set training.classifier={winner.classifier} "
                   f"--set training.alignment={winner.alignment} train")
    return 0
