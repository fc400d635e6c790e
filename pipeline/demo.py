"""`p300 demo`: the original walkthrough, end to end, on synthetic subjects.

synthesize N subjects -> ingest half, preprocess -> ingest the rest, preprocess ->
train v1 on 50% -> deploy -> evaluate the challenger -> promote -> train v2 on 75% ->
deploy -> evaluate both on a common holdout -> gated promote; then a summary of what
happened and where to look. Every step is the same module the CLI and jobs run.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from pipeline.config import Config, ConfigError
from pipeline.report import Reporter

__all__ = ["main", "STEPS"]

# (title, p300 arguments after the command name is resolved); {n}, {half} filled in
STEPS: list[tuple[str, list[str]]] = [
    ("synthesize {n} subjects", ["synth", "--subjects", "{n}", "--minutes", "{minutes}"]),
    ("ingest the first {half} subjects", ["ingest", "--max-subjects", "{half}"]),
    ("preprocess them", ["preprocess"]),
    ("ingest the other subjects", ["ingest"]),
    ("preprocess them", ["preprocess"]),
    ("train v1 (LDA) on 50% of the subjects", ["train", "--train-fraction", "0.5", "--classifier", "lda"]),
    ("deploy v1 as challenger", ["deploy"]),
    ("evaluate the challenger on unseen subjects", ["evaluate", "--target", "challenger"]),
    ("promote the challenger to champion", ["promote"]),
    ("train v2 (training.classifier, the comparison's winner) on 75%", ["train", "--train-fraction", "0.75"]),
    ("deploy v2 as challenger beside the champion", ["deploy"]),
    ("evaluate champion and challenger on a common holdout", ["evaluate", "--target", "both"]),
    ("promote only if the challenger has the better mean per-subject ROC AUC",
     ["promote", "--require-better", "roc_auc_subject_mean"]),
]


def _run_step(cfg: Config, argv: list[str], rep: Reporter) -> int:
    import importlib

    from pipeline.arguments import build_parser
    from pipeline.commands import COMMAND

    args = build_parser().parse_args(argv)
    return int(importlib.import_module(COMMAND[args.command].module).main(cfg, args, rep) or 0)


def _summary(cfg: Config, rep: Reporter, timings: list[tuple[str, float, int]]) -> None:
    from pyspark.sql import functions as F

    from pipeline.registry import CHALLENGER, CHAMPION, alias_version, mlflow_client, version_lineage
    from pipeline.serving import server_info
    from pipeline.spark import get_spark
    from pipeline.storage import read_table

    spark = get_spark(cfg)
    log = read_table(spark, cfg, "preprocess_log")
    features = read_table(spark, cfg, "features")
    counts = features.groupBy("label").agg(F.count("*").alias("n"), F.collect_set("subject_id").alias("s")).collect()
    per_label = {r["label"]: r["n"] for r in counts}
    subjects = len({sid for r in counts for sid in r["s"]})
    failed = log.where(F.col("status") != "ok").select("subject_id").distinct().count()
    client = mlflow_client(cfg)
    rep.result("")
    rep.result("=" * 78)
    rep.result("p300 demo: summary")
    rep.result("=" * 78)
    rep.table([(t, f"{s:.1f}s", "ok" if code == 0 else f"exit {code}") for t, s, code in timings],
              ["step", "time", "result"])
    ids = cfg.signal.event_ids
    rep.result(f"\nsubjects processed: {subjects} ({failed} not ok); epochs: {sum(per_label.values())} "
               f"({per_label.get(ids.target, 0)} Target, {per_label.get(ids.nontarget, 0)} NonTarget)")
    champion, challenger = alias_version(client, cfg, CHAMPION), alias_version(client, cfg, CHALLENGER)
    rows = []
    for mv in sorted(client.search_model_versions(f"name = '{cfg.registry.model_name}'"), key=lambda v: int(v.version)):
        lin = version_lineage(client, mv)
        evals = client.search_runs(
            [e.experiment_id for e in [client.get_experiment_by_name(cfg.evaluation.experiment)] if e],
            filter_string=f"tags.model_version = '{mv.version}'", order_by=["attributes.start_time DESC"], max_results=1)
        holdout = evals[0].data.metrics.get("roc_auc") if evals else None
        aliases = [a for a, v in ((CHAMPION, champion), (CHALLENGER, challenger)) if v and str(v.version) == str(mv.version)]
        rows.append((f"v{mv.version}", ",".join(aliases) or "-", len(lin.training_subjects),
                     lin.metrics.get("cv_roc_auc"), lin.metrics.get("cv_balanced_accuracy"), holdout,
                     evals[0].data.tags.get("holdout_subjects") if evals else "-"))
    rep.table(rows, ["version", "aliases", "train subj", "cv_auc", "cv_bal_acc", "holdout_auc", "holdout subjects"],
              title="\nmodels (cv_* cross-validated on training subjects; holdout from the latest evaluation):")
    rep.result(f"\nregistry: champion = {f'v{champion.version}' if champion else 'none'}, "
               f"challenger = {f'v{challenger.version}' if challenger else 'none'}")
    mlflow_dir = cfg.local_root / "mlflow"
    rep.result(f"plots (ERP, ROC, confusion matrices): MLflow artifacts under {mlflow_dir / 'artifacts'}")
    rep.result(f"MLflow UI:  mlflow ui --backend-store-uri {cfg.tracking_uri} --port 5000   (then open http://127.0.0.1:5000)")
    info = server_info(cfg)
    if info:
        auth = f" -H 'Authorization: Bearer {info.token}'" if info.token else ""
        n = len(features.first()["features"])
        rep.result(f"endpoint {cfg.serving.endpoint_name} at {info.url} (pid {info.pid}); query it with:")
        rep.result(f"  curl -s {info.url}/serving-endpoints/{cfg.serving.endpoint_name}/invocations{auth} "
                   f"-H 'Content-Type: application/json' \\\n"
                   f"    -d \"{{\\\"inputs\\\": [$(python3 -c 'print(\",\".join([\"0.0\"]*{n}))')]}}\"")
        rep.result(f"  stop it with: p300 --root {cfg.root} endpoint stop")


MIN_SUBJECTS = 4  # v2 trains on ceil(75%): with fewer, no subject is left for its evaluation


def main(cfg: Config, args: argparse.Namespace, rep: Reporter) -> int:
    if args.subjects < MIN_SUBJECTS:
        raise ConfigError(f"--subjects {args.subjects}: the demo needs at least {MIN_SUBJECTS} (v2 trains on 75% of "
                          "them, and the last evaluation needs a subject neither version saw)")
    root = cfg.local_root
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"the demo starts from an empty root, and {root} is not empty: "
                          f"pass --root to a new folder (or delete this one)")
    root.mkdir(parents=True, exist_ok=True)
    values = {"n": str(args.subjects), "half": str(math.ceil(args.subjects / 2)), "minutes": f"{args.minutes:g}"}
    timings: list[tuple[str, float, int]] = []
    start = time.perf_counter()
    for i, (title, argv) in enumerate(STEPS, 1):
        title = title.format(**values)
        rep.result(f"\n[{i}/{len(STEPS)}] {title}")
        t0 = time.perf_counter()
        code = _run_step(cfg, [a.format(**values) for a in argv], rep)
        timings.append((title, time.perf_counter() - t0, code))
        gated = argv[0] == "promote" and "--require-better" in argv
        if code != 0 and not gated:  # a refused gated promotion is an outcome, not a failure
            rep.result(f"demo: step {i} ({title}) failed with exit code {code}")
            return code
    if not getattr(args, "no_monitoring", False):  # drifted cohort -> monitor -> retrain (docs/monitoring.md)
        from pipeline.demo_monitoring import monitoring_step

        rep.result("\n[monitoring] a drifted cohort reaches the champion; p300 job monitor_and_retrain")
        t0 = time.perf_counter()
        code = monitoring_step(cfg, rep, lambda c, argv: _run_step(c, argv, rep), args.subjects, f"{args.minutes:g}")
        timings.append(("monitoring: drifted cohort, monitor, retrain", time.perf_counter() - t0, code))
    _summary(cfg, rep, timings)
    rep.result(f"\ndemo finished in {time.perf_counter() - start:.0f}s; root: {Path(root)}")
    return 0
