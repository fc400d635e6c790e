"""`p300`: the command line (the wheel's console script `p300`).

Each command is a thin shell: parse arguments (``pipeline/arguments.py``), load the
configuration once, and call ``<module>.main(cfg, args, reporter)`` of the module the
command table (``pipeline/commands.py``) names. Exit codes:
0 done (including runs that quarantined bad input), 1 the job could not run,
2 bad usage or configuration.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, Sequence

from pipeline.arguments import build_parser
from pipeline.commands import COMMAND
from pipeline.config import ConfigError, load_config
from pipeline.report import Reporter

__all__ = ["main", "run"]


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
    module = importlib.import_module(COMMAND[args.command].module)
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
