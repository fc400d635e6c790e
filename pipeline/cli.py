"""`p300`: the command line and the wheel's entry points.

Each command is a thin shell: parse arguments, load the configuration once, and call
``<module>.main(cfg, args, reporter)`` of the module that does the work. Exit codes:
0 done (including runs that quarantined bad input), 1 the job could not run,
2 bad usage or configuration.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import typing
from typing import Callable, Sequence

from pipeline.config import ClassifierName, ConfigError, load_config
from pipeline.report import Reporter

__all__ = ["main", "build_parser", "COMMANDS"]

# command -> module whose main(cfg, args, reporter) runs it
COMMANDS: dict[str, str] = {
    "synth": "pipeline.synth",
    "ingest": "pipeline.ingest",
    "preprocess": "pipeline.preprocess",
    "train": "pipeline.train",
    "compare": "pipeline.compare",
    "deploy": "pipeline.deploy",
    "evaluate": "pipeline.evaluate",
    "score": "pipeline.score",
    "promote": "pipeline.promote",
    "endpoint": "pipeline.endpoint_cli",
    "job": "pipeline.jobs",
    "demo": "pipeline.demo",
    "jvm-cache": "pipeline.jvm_archive",
    "monitor": "pipeline.monitor",
    "connect": "pipeline.connect_server",
}


def _subject_list(text: str) -> list[int]:
    """'1,2,5-7' -> [1, 2, 5, 6, 7]."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"subjects must look like 1,2,5-7, got {text!r}") from None
    return sorted(set(out))


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p300",
        description="Spark-native MLOps pipeline for P300 ERP classification: "
        "ingest -> preprocess -> train -> deploy -> evaluate -> promote.",
        epilog="Start with `p300 demo` on an empty --root to see the whole cycle.",
    )
    parser.add_argument("--conf", metavar="FILE", help="YAML overlay on conf/pipeline.yaml (e.g. conf/databricks.yaml)")
    parser.add_argument("--root", metavar="PATH", help="storage root (default ./lakehouse; env P300_ROOT)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override one config value, e.g. --set training.cv_folds=3 (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show everything: Spark's and the JVM's startup lines, library logs (spark.quiet=false)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("synth", help="write realistic synthetic subject files into the landing zone")
    p.add_argument("--subjects", type=int, required=True, help="number of subjects")
    p.add_argument("--first", type=int, default=1, help="first subject id (default 1)")
    p.add_argument("--minutes", type=float, default=12.0, help="recording length (default 12)")
    p.add_argument("--channels", type=int, default=16, help="EEG channels (default 16)")
    p.add_argument("--sfreq", type=float, default=None, help="sampling rate in Hz (default: signal.sfreq)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--drifted", action="store_true", help="a drifted cohort: later and smaller P300, more line "
                                                          "noise, higher electrode gain (pipeline.synth.DRIFTED)")

    p = sub.add_parser("ingest", help="landing zone -> raw_eeg Delta table, exactly once per file")
    p.add_argument("--max-subjects", type=int, default=None, metavar="N",
                   help="ingest at most N subject files this run, in subject order (the rest wait for the next run)")
    p.add_argument("--replace", action="store_true",
                   help="a re-delivered subject replaces its raw data (and is preprocessed again); "
                        "without it the file is quarantined as a duplicate")

    p = sub.add_parser("preprocess", help="new subjects in raw_eeg -> features, one applyInPandas")
    p.add_argument("--subjects", type=_subject_list, default=None,
                   help="only these subjects, e.g. 1,2,5-7 (default: every subject with new or replaced raw data)")
    p.add_argument("--reprocess", action="store_true",
                   help="recompute the given (or all) subjects even if up to date; their features are replaced "
                        "in one commit")

    p = sub.add_parser("train", help="train on the driver, log to MLflow, register, alias challenger")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--train-fraction", type=_fraction, default=None, metavar="F",
                   help="first ceil(F x n) processed subjects in id order (default training.train_fraction)")
    g.add_argument("--subjects", type=_subject_list, default=None, help="explicit training subjects")
    p.add_argument("--classifier", choices=typing.get_args(ClassifierName), default=None,
                   help="classifier pipeline (default training.classifier; `p300 compare` picks one)")
    p.add_argument("--no-alias", action="store_true", help="register only; do not move the challenger alias")
    p.add_argument("--force", action="store_true",
                   help="train again even if a version was registered from the same features version, "
                        "subjects and settings")

    p = sub.add_parser("compare", help="leave-one-subject-out comparison of classifier candidates (MLflow run)",
                       description="Fit every candidate (training.candidates) on all subjects but one, score the "
                       "left-out one (trialwise and unlabelled-calibration protocols), for every subject; log the "
                       "per-subject table, mean and min per-subject ROC AUC and a plot to one MLflow run.")
    p.add_argument("--candidates", metavar="A,B+recenter", default=None,
                   help="comma-separated classifier[+alignment] names (default training.candidates)")
    p.add_argument("--subjects", type=_subject_list, default=None, help="only these subjects (default: all)")
    p.add_argument("--write-conf", metavar="FILE", default=None,
                   help="write the winner as training.classifier/alignment into this YAML overlay "
                        "(train with p300 --conf FILE train); default: print the --set arguments")

    sub.add_parser("deploy", help="serve the challenger beside the champion (idempotent)")

    p = sub.add_parser("evaluate", help="score served model(s) on subjects they never saw")
    p.add_argument("--target", choices=["champion", "challenger", "both"], default="challenger")
    p.add_argument("--subjects", type=_subject_list, default=None, help="narrow the holdout")
    p.add_argument("--batch-size", type=int, default=None, help="epochs per request (default evaluation.batch_size)")

    p = sub.add_parser("score", help="batch-score the features table with mlflow.pyfunc.spark_udf")
    p.add_argument("--alias", default="champion", help="model alias to score with (default champion)")
    p.add_argument("--subjects", type=_subject_list, default=None)

    p = sub.add_parser("promote", help="challenger becomes champion in registry and endpoint")
    p.add_argument("--require-better", metavar="METRIC", default=None,
                   help="promote only if the latest 'both' evaluation shows the challenger ahead on METRIC")
    p.add_argument("--min-delta", type=float, default=0.0, metavar="D")

    p = sub.add_parser("endpoint", help="the local serving endpoint",
                       description="serve: run the local endpoint server in the foreground (Ctrl-C stops it); "
                                   "status: the server and its endpoints (on Databricks: the workspace endpoint); "
                                   "stop: stop this root's server by its recorded pid")
    p.add_argument("action", choices=["serve", "status", "stop"])
    p.add_argument("--host", default=None, help="bind address (default serving.host, 127.0.0.1; any other "
                                                "address requires serving.token)")
    p.add_argument("--port", type=int, default=None, help="port (default serving.port; 0 picks a free one)")

    p = sub.add_parser("job", help="run one job's tasks in order, as the Databricks bundle does")
    p.add_argument("name", choices=["ingest_and_preprocess", "train_and_deploy_challenger", "evaluate_model",
                                    "promote_to_champion", "monitor_and_retrain"])
    p.add_argument("--target", choices=["champion", "challenger", "both"], default="challenger",
                   help="evaluate_model's parameter")

    p = sub.add_parser("jvm-cache", help="build the local driver JVM's class archive (faster session start)",
                       description="Build a class data sharing archive for the local driver JVM: a small ingest "
                       "and preprocess in a JVM that dumps the classes it loaded. Local sessions map it from then "
                       "on (session start 3.4 -> 1.7 s on 2 cores). Its name follows pyspark's and Delta's jar files: "
                       "after upgrading or reinstalling either, run it again.")
    p.add_argument("--rebuild", action="store_true", help="build it again even when it exists")
    p.add_argument("--prune", action="store_true",
                   help="remove the directory's archives for other or older environments (each about 190 MB)")
    sub.add_parser("monitor", help="profile and drift per window of the inference log; the retraining rule",
                   description="Reads the endpoint's inference log, writes monitor_profile and monitor_drift for the "
                               "windows not yet processed (idempotent), applies monitoring.rule and records the "
                               "retrain flag (docs/monitoring.md).")
    p = sub.add_parser("connect", help="a local Spark Connect server with Delta (run jobs with spark.remote)",
                       description="serve: start Spark's Connect server with Delta on loopback and print its URL "
                       "for --set spark.remote=...; status: say whether this root's server runs; stop: stop it "
                       "by its recorded pid")
    p.add_argument("action", choices=["serve", "status", "stop"])
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    p = sub.add_parser("demo", help="the whole cycle on synthetic data from an empty root, with a summary")
    p.add_argument("--subjects", type=int, default=10)
    p.add_argument("--minutes", type=float, default=12.0)
    p.add_argument("--no-monitoring", action="store_true", help="skip the drifted-cohort monitoring step")
    return parser


def _quiet_libraries(environ: dict[str, str]) -> None:
    """The edge where third-party chatter is turned down: schema migrations of a new MLflow
    store, evaluation hints that do not apply to static predictions, download progress bars."""
    import logging

    for name, level in (("alembic", logging.WARNING), ("mlflow.models.evaluation", logging.ERROR),
                        ("mlflow.store.db.utils", logging.WARNING), ("py4j", logging.ERROR)):
        logging.getLogger(name).setLevel(level)
    if "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in environ:
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


def run(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None,
        reporter: Reporter | None = None) -> int:
    """Parse, configure, dispatch; returns the exit code (testable without sys.exit)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    rep = reporter or Reporter(quiet=args.quiet)
    if not args.verbose:
        _quiet_libraries(os.environ if environ is None else environ)
    try:
        cfg = load_config(args.conf, root=args.root, env=os.environ if environ is None else environ,
                          overrides=[*args.overrides, *(["spark.quiet=false"] if args.verbose else [])])
    except ConfigError as exc:
        print(f"p300: {exc}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args.command])
    command: Callable[..., int] = module.main
    try:
        return int(command(cfg, args, rep) or 0)
    except ConfigError as exc:
        print(f"p300 {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"p300 {args.command}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
