"""p300's argument parser, built from the command table (``pipeline/commands.py``): the global
options, one subparser per command with that command's own options."""
from __future__ import annotations

import argparse
import typing
from typing import Mapping, Sequence

from pipeline.commands import COMMANDS, GLOBAL_OPTIONS, JOBS, TARGETS, Task, split_global_options
from pipeline.config import ClassifierName

__all__ = ["build_parser", "parse_global_options", "task_arguments", "subject_list"]


def subject_list(text: str) -> list[int]:
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


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    for option in GLOBAL_OPTIONS:
        if option.metavar is None:
            parser.add_argument(*option.flags, dest=option.dest, action="store_true", help=option.help)
        elif option.repeat:
            parser.add_argument(*option.flags, dest=option.dest, metavar=option.metavar, help=option.help,
                                action="append", default=[])
        else:
            parser.add_argument(*option.flags, dest=option.dest, metavar=option.metavar, help=option.help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p300",
        description="Spark-native MLOps pipeline for P300 ERP classification: "
        "ingest -> preprocess -> train -> deploy -> evaluate -> promote.",
        epilog="Start with `p300 demo` on an empty --root to see the whole cycle.",
    )
    _add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {c.name: sub.add_parser(c.name, help=c.help, description=c.description) for c in COMMANDS}

    p = parsers["synth"]
    p.add_argument("--subjects", type=int, required=True, help="number of subjects")
    p.add_argument("--first", type=int, default=1, help="first subject id (default 1)")
    p.add_argument("--minutes", type=float, default=12.0, help="recording length (default 12)")
    p.add_argument("--channels", type=int, default=16, help="EEG channels (default 16)")
    p.add_argument("--sfreq", type=float, default=None, help="sampling rate in Hz (default: signal.sfreq)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--drifted", action="store_true", help="a drifted cohort: later and smaller P300, more line "
                                                          "noise, higher electrode gain (pipeline.synth.DRIFTED)")

    p = parsers["ingest"]
    p.add_argument("--max-subjects", type=int, default=None, metavar="N",
                   help="ingest at most N subject files this run, in subject order (the rest wait for the next run)")
    p.add_argument("--replace", action="store_true",
                   help="a re-delivered subject replaces its raw data (and is preprocessed again); "
                        "without it the file is quarantined as a duplicate")

    p = parsers["preprocess"]
    p.add_argument("--subjects", type=subject_list, default=None,
                   help="only these subjects, e.g. 1,2,5-7 (default: every subject with new or replaced raw data)")
    p.add_argument("--reprocess", action="store_true",
                   help="recompute the given (or all) subjects even if up to date; their features are replaced "
                        "in one commit")

    p = parsers["train"]
    g = p.add_mutually_exclusive_group()
    g.add_argument("--train-fraction", type=_fraction, default=None, metavar="F",
                   help="first ceil(F x n) processed subjects in id order (default training.train_fraction)")
    g.add_argument("--subjects", type=subject_list, default=None, help="explicit training subjects")
    p.add_argument("--classifier", choices=typing.get_args(ClassifierName), default=None,
                   help="classifier pipeline (default training.classifier; `p300 compare` picks one)")
    p.add_argument("--no-alias", action="store_true", help="register only; do not move the challenger alias")
    p.add_argument("--force", action="store_true",
                   help="train again even if a version was registered from the same features version, "
                        "subjects and settings")

    p = parsers["compare"]
    p.add_argument("--candidates", metavar="A,B+recenter", default=None,
                   help="comma-separated classifier[+alignment] names (default training.candidates)")
    p.add_argument("--subjects", type=subject_list, default=None, help="only these subjects (default: all)")
    p.add_argument("--write-conf", metavar="FILE", default=None,
                   help="write the winner as training.classifier/alignment into this YAML overlay "
                        "(train with p300 --conf FILE train); default: print the --set arguments")

    p = parsers["evaluate"]
    p.add_argument("--target", choices=TARGETS, default="challenger")
    p.add_argument("--subjects", type=subject_list, default=None, help="narrow the holdout")
    p.add_argument("--batch-size", type=int, default=None, help="epochs per request (default evaluation.batch_size)")

    p = parsers["score"]
    p.add_argument("--alias", default="champion", help="model alias to score with (default champion)")
    p.add_argument("--subjects", type=subject_list, default=None)

    p = parsers["promote"]
    p.add_argument("--require-better", metavar="METRIC", default=None,
                   help="promote only if the latest 'both' evaluation shows the challenger ahead on METRIC")
    p.add_argument("--min-delta", type=float, default=0.0, metavar="D")

    p = parsers["endpoint"]
    p.add_argument("action", choices=["serve", "status", "stop"])
    p.add_argument("--host", default=None, help="bind address (default serving.host, 127.0.0.1; any other "
                                                "address requires serving.token)")
    p.add_argument("--port", type=int, default=None, help="port (default serving.port; 0 picks a free one)")

    p = parsers["job"]
    p.add_argument("name", choices=list(JOBS))
    p.add_argument("--target", choices=TARGETS, default="challenger", help="evaluate_model's parameter")

    p = parsers["jvm-cache"]
    p.add_argument("--rebuild", action="store_true", help="build it again even when it exists")
    p.add_argument("--prune", action="store_true",
                   help="remove the directory's archives for other or older environments (each about 190 MB)")

    p = parsers["connect"]
    p.add_argument("action", choices=["serve", "status", "stop"])
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")

    p = parsers["demo"]
    p.add_argument("--subjects", type=int, default=10, help="synthetic subjects, at least 4 (default 10)")
    p.add_argument("--minutes", type=float, default=12.0)
    p.add_argument("--no-monitoring", action="store_true", help="skip the drifted-cohort monitoring step")
    return parser


def parse_global_options(argv: Sequence[str]) -> argparse.Namespace:
    """p300's global options (conf, root, overrides, quiet) from any command line."""
    parser = argparse.ArgumentParser(prog="p300", add_help=False)
    _add_global_options(parser)
    globals_, _ = split_global_options(argv)
    return parser.parse_args(globals_)


def task_arguments(task: Task, job_args: argparse.Namespace | None = None,
                   values: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The task's arguments as `p300 COMMAND ...` would parse them; global options from the job."""
    args = build_parser().parse_args([task.command, *task.argv(values or {})])
    for option in GLOBAL_OPTIONS:
        if job_args is not None and hasattr(job_args, option.dest):
            setattr(args, option.dest, getattr(job_args, option.dest))
    return args
