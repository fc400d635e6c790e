"""The wheel's console scripts for job tasks: ``p300-ingest``, ``p300-preprocess``, ...

A Databricks ``python_wheel_task`` looks its ``entry_point`` up by name among the
wheel's entry points and calls that function with no arguments; the task's
``parameters`` arrive in ``sys.argv``. So each task command of the command table
(``pipeline/commands.py``) has a console script ``p300-<command>`` whose function
``pipeline.jobs:<command>_task`` parses ``sys.argv`` with the very parser of
``p300``: ``--conf``, ``--root``, ``--set`` and ``-q`` may come anywhere, the rest are the
command's own options. ``p300-ingest --conf databricks.yaml`` is
``p300 --conf databricks.yaml ingest``.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from pipeline.cli import run
from pipeline.commands import COMMAND, TASK_COMMANDS, split_global_options

__all__ = ["run_task", *(COMMAND[c].function_name for c in TASK_COMMANDS)]


def run_task(command: str, argv: Sequence[str] | None = None) -> int:
    """Run one task command as `p300` would, from a console script's or wheel task's arguments."""
    if command not in TASK_COMMANDS:
        raise ValueError(f"unknown task command {command!r}; one of {', '.join(TASK_COMMANDS)}")
    globals_, rest = split_global_options(sys.argv[1:] if argv is None else argv)
    return run([*globals_, command, *rest])


def _entry_point(command: str) -> Callable[[], int]:
    def entry() -> int:
        code = run_task(command)
        if code:  # a wheel task fails only on an exception; a console script exits with the code either way
            raise SystemExit(code)
        return 0

    entry.__name__ = entry.__qualname__ = COMMAND[command].function_name
    entry.__doc__ = f"Console script `{COMMAND[command].entry_point}`: {COMMAND[command].help}."
    return entry


# one function per task command, named as commands.CONSOLE_SCRIPTS (and so setup.py) names it
_ENTRY_POINTS: dict[str, Callable[[], int]] = {
    COMMAND[c].function_name: _entry_point(c) for c in TASK_COMMANDS}


def __getattr__(name: str) -> Callable[[], int]:
    """``pipeline.jobs:ingest_task`` and its siblings (PEP 562 module attributes)."""
    try:
        return _ENTRY_POINTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_ENTRY_POINTS])
