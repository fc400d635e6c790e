"""The four jobs: run locally by `p300 job NAME`, task by task by the wheel's entry points.

``JOBS`` is the one description of which tasks a job has, in what order, with which
parameters. The Databricks bundle (``databricks.yml`` + ``resources/<job>.yml``) runs
the same tasks as ``python_wheel_task``s; ``tests/test_jobs.py`` keeps the two in step.

A Databricks ``python_wheel_task`` looks its ``entry_point`` up by name among the
wheel's entry points and calls that function with no arguments; the task's
``parameters`` arrive in ``sys.argv``. So each task has a console script
(``p300-ingest``, ``p300-preprocess``, ...) whose function parses ``sys.argv`` with the
very parser of ``p300``: ``--conf``, ``--root``, ``--set`` and ``-q`` may come anywhere,
the rest are the command's own options. ``p300-ingest --conf databricks.yaml`` is
``p300 --conf databricks.yaml ingest``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pipeline.config import Config, ConfigError
from pipeline.faults import kill_point
from pipeline.report import Reporter

__all__ = [
    "Task",
    "JOBS",
    "JOB_PARAMETERS",
    "TASK_COMMANDS",
    "ENTRY_POINTS",
    "task_arguments",
    "split_global_options",
    "parse_global_options",
    "run_task",
    "main",
    "ingest_task",
    "preprocess_task",
    "train_task",
    "deploy_task",
    "evaluate_task",
    "promote_task",
    "monitor_task",
]


@dataclass(frozen=True)
class Task:
    """One task of a job: the p300 command it runs and that command's parameters."""

    key: str
    command: str
    params: tuple[str, ...] = ()  # "{name}" stands for the job parameter `name`
    when_flag: str | None = None  # run (with the tasks after it) only when the monitor set this flag

    @property
    def entry_point(self) -> str:
        """The console script (and python_wheel_task entry_point) that runs this task."""
        return f"p300-{self.command}"

    def argv(self, values: Mapping[str, str]) -> list[str]:
        """The task's command line after the command name, job parameters filled in."""
        return [p.format(**values) for p in self.params]


JOBS: dict[str, tuple[Task, ...]] = {
    "ingest_and_preprocess": (Task("ingest", "ingest"), Task("preprocess", "preprocess")),
    "train_and_deploy_challenger": (Task("train", "train"), Task("deploy", "deploy")),
    "evaluate_model": (Task("evaluate", "evaluate", ("--target", "{target}")),),
    "promote_to_champion": (Task("promote", "promote"),),
    # the bundle puts a condition task on the monitor's task value `retrain` before train
    "monitor_and_retrain": (Task("monitor", "monitor"), Task("train", "train", when_flag="retrain"),
                            Task("deploy", "deploy"), Task("evaluate", "evaluate", ("--target", "challenger"))),
}

# job parameters and their defaults (the bundle declares the same as job `parameters`)
JOB_PARAMETERS: dict[str, dict[str, str]] = {
    "ingest_and_preprocess": {},
    "train_and_deploy_challenger": {},
    "evaluate_model": {"target": "challenger"},
    "promote_to_champion": {},
    "monitor_and_retrain": {},
}

TASK_COMMANDS: tuple[str, ...] = ("ingest", "preprocess", "train", "deploy", "evaluate", "promote", "monitor")

# console script name -> "module:function", as setup.py declares them
ENTRY_POINTS: dict[str, str] = {f"p300-{c}": f"pipeline.jobs:{c}_task" for c in TASK_COMMANDS}

_GLOBAL_DESTS = ("conf", "root", "overrides", "quiet", "verbose")


def task_arguments(task: Task, job_args: argparse.Namespace | None = None,
                   values: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The task's arguments as `p300 COMMAND ...` would parse them; global options from the job."""
    from pipeline.cli import build_parser

    args = build_parser().parse_args([task.command, *task.argv(values or {})])
    for dest in _GLOBAL_DESTS:
        if job_args is not None and hasattr(job_args, dest):
            setattr(args, dest, getattr(job_args, dest))
    return args


def _job_values(name: str, args: Any) -> dict[str, str]:
    return {key: getattr(args, key, None) or default for key, default in JOB_PARAMETERS[name].items()}


def main(cfg: Config, args: Any, rep: Reporter) -> int:
    """`p300 job NAME`: the job's tasks in order, in this process; stops at the first failure."""
    from pipeline.cli import COMMANDS

    name = args.name
    tasks = JOBS[name]
    values = _job_values(name, args)
    shown = ", ".join(f"{k}={v}" for k, v in values.items())
    rep.info(f"job {name}{f' ({shown})' if shown else ''}: {' -> '.join(t.key for t in tasks)}")
    start = time.perf_counter()
    timings: list[tuple[str, float]] = []
    for i, task in enumerate(tasks):
        if task.when_flag is not None:
            from pipeline.retrain_flag import retrain_requested

            flagged, why = retrain_requested(cfg)
            if not flagged:
                rep.result(f"job {name}: flag {task.when_flag!r} not set ({why}); not run: "
                           + ", ".join(t.key for t in tasks[i:]))
                break
            rep.info(f"job {name}: flag {task.when_flag!r} set ({why})")
        task_args = task_arguments(task, args, values)
        t0 = time.perf_counter()
        rep.info(f"job {name}: task {task.key} (p300 {' '.join([task.command, *task.argv(values)])})")
        try:
            module = importlib.import_module(COMMANDS[task.command])
            code = int(module.main(cfg, task_args, rep) or 0)
            error = f"exit code {code}"
        except ConfigError as exc:
            code, error = 2, f"configuration: {exc}"
        except Exception as exc:  # the job reports which task broke and why, then stops
            rep.info(traceback.format_exc().rstrip())
            code, error = 1, f"{type(exc).__name__}: {exc}"
        timings.append((task.key, time.perf_counter() - t0))
        if code != 0:
            skipped = [t.key for t in tasks[i + 1:]]
            rep.warn(f"job {name}: task {task.key} failed ({error})"
                     + (f"; not run: {', '.join(skipped)}" if skipped else ""))
            return code
        rep.info(f"job {name}: task {task.key} done in {timings[-1][1]:.1f}s")
        kill_point(cfg, f"job.after_{task.key}")
    rep.result(f"job {name}: {len(timings)} task(s) done in {time.perf_counter() - start:.1f}s ("
               + ", ".join(f"{k} {s:.1f}s" for k, s in timings) + ")")
    return 0


# ---- entry points: one console script per task -----------------------------------------------

def split_global_options(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate p300's global options (wherever they appear) from the command's own."""
    from pipeline.cli import build_parser

    takes_value: dict[str, bool] = {}
    for action in build_parser()._actions:  # the real parser: no second list of global options
        if isinstance(action, argparse._SubParsersAction) or "-h" in action.option_strings:
            continue
        for option in action.option_strings:
            takes_value[option] = action.nargs != 0
    globals_: list[str] = []
    rest: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            rest.extend(tokens[i:])
            break
        option = token.split("=", 1)[0]
        if option in takes_value:
            globals_.append(token)
            if takes_value[option] and "=" not in token and i + 1 < len(tokens):
                globals_.append(tokens[i + 1])
                i += 1
        else:
            rest.append(token)
        i += 1
    return globals_, rest


def parse_global_options(argv: Sequence[str]) -> argparse.Namespace:
    """p300's global options (conf, root, overrides, quiet) from any command line."""
    from pipeline.cli import build_parser

    globals_, _ = split_global_options(argv)
    return build_parser().parse_args([*globals_, "deploy"])  # a command without options of its own


def run_task(command: str, argv: Sequence[str] | None = None) -> int:
    """Run one task command as `p300` would, from a console script's or wheel task's arguments."""
    from pipeline.cli import run

    if command not in TASK_COMMANDS:
        raise ValueError(f"unknown task command {command!r}; one of {', '.join(TASK_COMMANDS)}")
    globals_, rest = split_global_options(sys.argv[1:] if argv is None else argv)
    return run([*globals_, command, *rest])


def _finish(code: int) -> int:
    # a wheel task fails only on an exception; a console script exits with the code either way
    if code:
        raise SystemExit(code)
    return 0


def ingest_task() -> int:
    """Entry point `p300-ingest`: landing zone -> raw_eeg."""
    return _finish(run_task("ingest"))


def preprocess_task() -> int:
    """Entry point `p300-preprocess`: raw_eeg -> features."""
    return _finish(run_task("preprocess"))


def train_task() -> int:
    """Entry point `p300-train`: features -> registered version with alias challenger."""
    return _finish(run_task("train"))


def deploy_task() -> int:
    """Entry point `p300-deploy`: serve the challenger beside the champion."""
    return _finish(run_task("deploy"))


def evaluate_task() -> int:
    """Entry point `p300-evaluate`: score served model(s) on unseen subjects (`--target`)."""
    return _finish(run_task("evaluate"))


def promote_task() -> int:
    """Entry point `p300-promote`: challenger becomes champion."""
    return _finish(run_task("promote"))


def monitor_task() -> int:
    """Entry point `p300-monitor`: profile and drift of the inference log; the retraining flag."""
    return _finish(run_task("monitor"))
