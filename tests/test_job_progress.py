"""Progress of long Spark jobs (pipeline.job_progress), on the shared local session."""
from __future__ import annotations

import io
import re
import threading
import time

from pipeline.job_progress import job_progress, tasks_done
from pipeline.report import Reporter


def _run(spark, tasks: int):
    def slow(batches):  # defined here so that the workers get it by value, not from this test module
        import time

        for b in batches:
            time.sleep(0.3)
            yield b

    return spark.range(0, tasks, 1, tasks).mapInPandas(slow, "id long").collect()


def _gated(spark, tasks: int, gate: str):
    """A job whose first two tasks end at once and whose others wait until ``gate`` exists."""
    def wait(batches):
        import os
        import time

        from pyspark import TaskContext

        if TaskContext.get().partitionId() >= 2:
            while not os.path.exists(gate):
                time.sleep(0.05)
        yield from batches

    return spark.range(0, tasks, 1, tasks).mapInPandas(wait, "id long").collect()


def test_reports_tasks_done_while_the_job_runs_and_at_the_end(spark, tmp_path):
    err = io.StringIO()
    rep = Reporter(err=err, progress_every_s=0.1)
    gate = tmp_path / "gate"
    sc = spark.sparkContext
    sc.setJobGroup("outer", "an enclosing group")
    try:
        with job_progress(spark, rep, "demo", "subjects", 4):
            assert sc.getLocalProperty("spark.jobGroup.id").startswith("p300-progress-")
            # the job runs in a thread (the group is a thread-local property: pass it on)
            group = sc.getLocalProperty("spark.jobGroup.id")
            rows: list = []

            def job():
                sc.setLocalProperty("spark.jobGroup.id", group)
                rows.extend(_gated(spark, 4, str(gate)))

            runner = threading.Thread(target=job)
            runner.start()
            deadline = time.monotonic() + 120
            while "demo: 2/4 subjects done" not in err.getvalue() and time.monotonic() < deadline:
                time.sleep(0.05)
            # two tasks are still held at the gate: the line came while the job ran
            assert "demo: 2/4 subjects done" in err.getvalue() and runner.is_alive() and not gate.exists()
            gate.touch()
            runner.join(timeout=120)
            assert len(rows) == 4
        assert sc.getLocalProperty("spark.jobGroup.id") == "outer"  # restored
    finally:
        gate.touch()
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
    counts = [int(m) for m in re.findall(r"\[p300\] demo: (\d+)/4 subjects done \(\d+ s\)", err.getvalue())]
    assert counts[0] < 4 and counts[-1] == 4 and counts == sorted(set(counts))  # each change once, in order
    assert err.getvalue().count("4/4") == 1


def test_quiet_or_single_task_jobs_report_nothing_and_leave_no_group(spark):
    for rep, tasks in ((Reporter(err=io.StringIO(), quiet=True, progress_every_s=0.05), 3),
                       (Reporter(err=io.StringIO(), progress_every_s=0.05), 1)):
        with job_progress(spark, rep, "demo", "files", tasks):
            _run(spark, tasks)
        assert rep.err.getvalue() == ""
        assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None


def test_only_the_stage_with_one_task_per_unit_counts(spark):
    sc = spark.sparkContext
    sc.setJobGroup("p300-progress-test", "three tasks")
    try:
        _run(spark, 3)
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
    assert tasks_done(spark, "p300-progress-test", 3) == 3
    assert tasks_done(spark, "p300-progress-test", 3, running_only=True) is None  # it has ended
    assert tasks_done(spark, "p300-progress-test", 5) is None  # no stage of five tasks
    assert tasks_done(spark, "no-such-group", 3) is None
