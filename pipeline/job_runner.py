"""`p300 job NAME`: one job's tasks in order, in this process, as the Databricks bundle runs them.

The jobs, their tasks and parameters are the command table's ``JOBS`` and
``JOB_PARAMETERS`` (``pipeline/commands.py``); the bundle (``databricks.yml`` +
``resources/``) runs the same tasks as ``python_wheel_task``s through the console scripts
of ``pipeline/jobs.py``, and ``tests/test_jobs.py`` keeps the two in step.
"""
from __future__ import annotations

import importlib
import time
import traceback
from typing import Any

from pipeline.arguments import task_arguments
from pipeline.commands import COMMAND, JOB_PARAMETERS, JOBS
from pipeline.config import Config, ConfigError
from pipeline.faults import kill_point
from pipeline.report import Reporter

__all__ = ["main"]


def _job_values(name: str, args: Any) -> dict[str, str]:
    return {key: getattr(args, key, None) or default for key, default in JOB_PARAMETERS[name].items()}


def main(cfg: Config, args: Any, rep: Reporter) -> int:
    """`p300 job NAME`: the job's tasks in order, in this process; stops at the first failure."""
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
            module = importlib.import_module(COMMAND[task.command].module)
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
