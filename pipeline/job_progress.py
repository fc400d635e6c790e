"""Progress of one long Spark job, for users: how many of its subjects (or files) are done.

Preprocessing runs one task per subject and ingest one task per file, so the tasks done
in the stage that has exactly that many tasks are the subjects or files done. While the
body of ``job_progress`` runs, a daemon thread asks Spark's status tracker about the
jobs of a job group of its own every ``rep.progress_every_s`` seconds and reports each change
(``[p300] preprocess: 7/20 subjects done (12 s)``); the count at the end is always
reported. It reads Spark's bookkeeping only, never the data.

Over Spark Connect there is no status tracker and no job group; the server streams each
operation's stages with their task counts instead, and a progress handler
(``SparkSession.registerProgressHandler``) reads the same count from them.
"""
from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from pyspark.sql import SparkSession

from pipeline.report import Reporter
from pipeline.spark import is_classic

__all__ = ["job_progress", "tasks_done"]

_GROUP, _DESCRIPTION = "spark.jobGroup.id", "spark.job.description"


def tasks_done(spark: SparkSession, group: str, total: int, running_only: bool = False) -> int | None:
    """Tasks completed in the group's stage of ``total`` tasks; None before there is one.

    Delta runs small jobs of its own inside a write (log replay, file listing), which may
    happen to have ``total`` tasks too; they last a fraction of a second, so while the job
    runs only stages still running count (``running_only``), and at the end the stage that
    got furthest."""
    tracker = spark.sparkContext.statusTracker()
    running = set(tracker.getActiveStageIds()) if running_only else None
    done = None
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job else ():
            if running is not None and stage_id not in running:
                continue
            stage = tracker.getStageInfo(stage_id)
            if stage is not None and stage.numTasks == total:
                done = max(done or 0, stage.numCompletedTasks)
    return done


@contextmanager
def job_progress(spark: SparkSession, rep: Reporter, what: str, unit: str, total: int) -> Iterator[None]:
    """Report ``what: done/total unit done`` while the body's Spark jobs run (see the module docstring)."""
    if rep.quiet or total <= 1:
        yield
        return
    if not is_classic(spark):
        with _connect_progress(spark, rep, what, unit, total):
            yield
        return
    sc = spark.sparkContext
    group = f"p300-progress-{uuid.uuid4().hex[:12]}"
    previous = {k: sc.getLocalProperty(k) for k in (_GROUP, _DESCRIPTION)}
    sc.setJobGroup(group, f"p300 {what}: {total} {unit}")
    start = time.perf_counter()
    stop = threading.Event()
    said = [-1]

    def report(running_only: bool) -> None:
        done = tasks_done(spark, group, total, running_only)
        if done is not None and done > said[0]:  # counts only ever go up
            said[0] = done
            rep.progress(done, total, what, unit, time.perf_counter() - start)

    def poll() -> None:
        while not stop.wait(rep.progress_every_s):
            try:
                report(running_only=True)
            except Exception as exc:  # noqa: BLE001 - progress is best effort; the job goes on regardless
                rep.warn(f"{what}: progress reporting stopped ({type(exc).__name__}: {exc}); the job goes on")
                return

    thread = threading.Thread(target=poll, name="p300-job-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for key, value in previous.items():
            sc.setLocalProperty(key, value)  # type: ignore[arg-type]  # None removes it
    try:
        report(running_only=False)
    except Exception as exc:  # noqa: BLE001 - the job has succeeded; a failed progress line must not say otherwise
        rep.warn(f"{what}: no final progress count ({type(exc).__name__}: {exc}); the job itself succeeded")


@contextmanager
def _connect_progress(spark: SparkSession, rep: Reporter, what: str, unit: str, total: int) -> Iterator[None]:
    """The Spark Connect variant: stages of ``total`` tasks as the server reports them."""
    start = time.perf_counter()
    said, last = [-1], [0.0]
    best: dict[int, int] = {}  # stage id -> tasks completed

    def handler(stages, inflight_tasks, operation_id, done):  # noqa: ANN001 - pyspark's ProgressHandler
        for stage in stages or ():
            if stage.num_tasks == total:
                best[stage.stage_id] = max(best.get(stage.stage_id, 0), stage.num_completed_tasks)
        now = time.perf_counter()
        count = max(best.values(), default=-1)
        if count > said[0] and now - last[0] >= rep.progress_every_s:
            said[0], last[0] = count, now
            rep.progress(count, total, what, unit, now - start)

    spark.registerProgressHandler(handler)
    try:
        yield
    finally:
        spark.removeProgressHandler(handler)
    count = max(best.values(), default=None)
    if count is not None and count > said[0]:
        rep.progress(count, total, what, unit, time.perf_counter() - start)
