"""Running jobs for the fault tests: killed runs in their own process, everything else here.

A run the harness kills is the installed ``p300`` console script in a new session (process
group), killed with SIGKILL at a named kill point (``P300__FAULTS__KILL_AT``, see
pipeline/faults.py) or after a share of the job's uncrashed run time: a power cut takes the
driver, its JVM and its Python workers at once. Runs that are never killed (the reference
roots, the reruns after a kill) go through ``pipeline.cli.run`` in the test process, on its
one warm SparkSession: the same command, arguments and code path as ``p300``, without a new
JVM per run, which is what a case costs most.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

P300 = Path(sys.executable).with_name("p300")
# 3 subjects of 1 minute: train takes 2 (ceil(0.6 x 3)), evaluate has 1 it never saw
SUBJECTS, MINUTES, CHANNELS, SFREQ = 3, 1.0, 8, 128.0
SETS = ("spark.master=local[2]", "spark.shuffle_partitions=2", "storage.raw_chunk_samples=2048", "spark.jit=c1",
        "training.cv_folds=2", "training.train_fraction=0.6", "spark.driver_memory=1g")
# stage -> (the stage it starts from, the p300 command that makes it)
STAGES = {
    "landing": (None, ("synth", "--subjects", str(SUBJECTS), "--minutes", str(MINUTES), "--channels",
                       str(CHANNELS), "--sfreq", str(SFREQ))),
    "ingested": ("landing", ("ingest",)),
    "preprocessed": ("ingested", ("preprocess",)),
    "trained": ("preprocessed", ("train",)),
    "deployed": ("trained", ("deploy",)),
    "evaluated": ("deployed", ("evaluate", "--target", "challenger")),
    "promoted": ("evaluated", ("promote",)),
    "scored": ("promoted", ("score",)),
}
# stages whose root has an endpoint: a copy gets its own server first (`p300 deploy`, a no-op for the
# registry), as the running server a job at that stage talks to (copies leave serving/ behind)
SERVED = ("deployed", "evaluated", "promoted", "scored")
TIME_KILL_TRIES = 3  # runs of a time kill that may end before their timer (time_kill)


@dataclass
class Run:
    code: int | None  # None: killed by the harness's timer
    out: str
    err: str
    seconds: float


def _argv(root: Path, argv: tuple[str, ...]) -> list[str]:
    return ["--root", str(root), *[a for s in SETS for a in ("--set", s)], *argv]


def _env(kill_at: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P300", "MLFLOW_", "PYSPARK_GATEWAY"))}
    if kill_at:
        env["P300__FAULTS__KILL_AT"] = kill_at
    return env


def run_p300(root: Path, *argv: str, kill_at: str | None = None, kill_after_s: float | None = None,
             timeout_s: float = 900) -> Run:
    """One `p300` process in a new session; SIGKILL to the whole group after ``kill_after_s``."""
    t0 = time.monotonic()
    proc = subprocess.Popen([str(P300), *_argv(root, argv)], env=_env(kill_at), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=kill_after_s if kill_after_s is not None else timeout_s)
        return Run(proc.returncode, out, err, time.monotonic() - t0)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        if kill_after_s is None:
            raise AssertionError(f"p300 {' '.join(argv)} ran past {timeout_s:g}s: {err[-2000:]}")
        return Run(None, out, err, time.monotonic() - t0)


def run_here(root: Path, *argv: str) -> Run:
    """The same command through ``pipeline.cli.run`` in this process (its SparkSession, if one is
    active), with the environment ignored as the subprocesses' P300 variables are."""
    import mlflow

    from pipeline import cli
    from pipeline.report import Reporter

    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    try:
        code = cli.run(_argv(root, argv), environ={}, reporter=Reporter(out=out, err=err))
    finally:
        while mlflow.active_run() is not None:  # a failed job must not leave a run open for the next
            mlflow.end_run("FAILED")
    return Run(code, out.getvalue(), err.getvalue(), time.monotonic() - t0)


def ensure_class_archive() -> None:
    """This environment's class archive for the `p300` processes the harness starts (what a user
    builds once with `p300 jvm-cache`): built if missing, a no-op otherwise; its name is a hash
    of the jars' paths as that interpreter sees them, so the command itself decides."""
    done = subprocess.run([str(P300), "-q", "jvm-cache"], env=_env(None), capture_output=True, text=True,
                          timeout=1800)
    if done.returncode == 2 and "class_archive_dir is null" in done.stderr:
        return  # turned off by the configuration
    assert done.returncode == 0, f"p300 jvm-cache: {done.stderr[-2000:]}"


def stop_server(root: Path) -> None:
    """Stop a root's local endpoint server, if deploy started one (it runs in its own session)."""
    if (root / "serving").exists():
        run_here(root, "endpoint", "stop")


def copy_root(src: Path, dst: Path) -> Path:
    """A prepared root, copied; the sqlite store and artifact URIs hold absolute paths, so the
    MLflow store is rewritten to the copy's location (MLflow's own store API would not move it)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("serving", "_locks"))
    db = dst / "mlflow" / "mlflow.db"
    if db.exists():
        con = sqlite3.connect(db)
        old, new = (src / "mlflow").as_uri(), (dst / "mlflow").as_uri()
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                              ("model_versions", "source"), ("model_versions", "storage_location"),
                              ("logged_models", "artifact_location")):
            try:
                con.execute(f"UPDATE {table} SET {column} = REPLACE({column}, ?, ?)", (old, new))
            except sqlite3.OperationalError:  # a column this MLflow version does not have
                pass
        con.commit()
        con.close()
    return dst


class Prepared:
    """Roots at each stage of the cycle, made once (here, by runs never killed) and copied for
    every case: the starting point of a case and the reference its rerun must equal. Made
    lazily, so a selection of tests prepares only the stages it needs."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._cold: dict[tuple[str, tuple[str, ...]], float] = {}

    def root(self, stage: str) -> Path:
        path = self.base / stage
        if path.exists():
            return path
        parent, argv = STAGES[stage]
        if parent is None:
            path.mkdir(parents=True)
        else:
            self.copy(parent, path)
        run = run_here(path, *argv)
        stop_server(path)  # copies start their own server when they need one
        assert run.code == 0, f"preparing {stage}: {failure_report(path, run)}"
        return path

    def copy(self, stage: str, dst: Path) -> Path:
        copy_root(self.root(stage), dst)
        if stage in SERVED:
            run = run_here(dst, "deploy")
            assert run.code == 0, f"serving the copy of {stage}: {failure_report(dst, run)}"
        return dst

    def cold_seconds(self, start: str, argv: tuple[str, ...]) -> float:
        """How long ``p300 argv`` takes from ``start`` in a process of its own, never killed:
        what a time kill takes its share of (measured once, only when a time kill needs it)."""
        key = (start, argv)
        if key not in self._cold:
            path = self.copy(start, self.base / f"timing-{len(self._cold)}")
            run = run_p300(path, *argv)
            stop_server(path)
            assert run.code == 0, f"timing p300 {' '.join(argv)}: {failure_report(path, run)}"
            self._cold[key] = run.seconds
            shutil.rmtree(path, ignore_errors=True)
        return self._cold[key]

    def close(self) -> None:
        for path in self.base.iterdir():
            stop_server(path)


def kill_and_rerun(prepared: Prepared, case_root: Path, stage: str, argv: tuple[str, ...], kill: tuple,
                   start: str | None = None) -> Run:
    """Copy the starting root (the stage's parent unless ``start`` says), run ``argv`` in its own
    process killed as ``kill`` says, then run it again to the end."""
    start = start or STAGES[stage][0]
    prepared.root(stage)  # the reference
    how, where = kill
    if how == "point":
        prepared.copy(start, case_root)
        killed = run_p300(case_root, *argv, kill_at=where)
        assert killed.code == -signal.SIGKILL, f"kill point {where} never fired: {failure_report(case_root, killed)}"
    else:
        time_kill(prepared, case_root, start, argv, where)
    rerun = run_here(case_root, *argv)
    assert rerun.code == 0, f"rerun after the kill failed:\n{failure_report(case_root, rerun)}"
    return rerun


def time_kill(prepared: Prepared, case_root: Path, start: str, argv: tuple[str, ...], share: float) -> Run:
    """``argv`` on a fresh copy of ``start``, killed after ``share`` of the job's run time. On a
    shared machine a run can be quicker than the timed one, and one that ends before its timer
    was never killed: the case starts again from a fresh copy, timed by that quicker run, up to
    ``TIME_KILL_TRIES`` times, and fails rather than pass without a kill."""
    run_s = prepared.cold_seconds(start, argv)
    ended: list[float] = []
    for _ in range(TIME_KILL_TRIES):
        if case_root.exists():
            stop_server(case_root)
            shutil.rmtree(case_root)
        prepared.copy(start, case_root)
        killed = run_p300(case_root, *argv, kill_after_s=share * run_s)
        if killed.code is None:
            return killed
        assert killed.code == 0, f"p300 {' '.join(argv)} failed before its kill: {failure_report(case_root, killed)}"
        ended.append(killed.seconds)
        run_s = min(run_s, killed.seconds)
    raise AssertionError(f"the kill at {share:.0%} of p300 {' '.join(argv)} never fired: each of {TIME_KILL_TRIES} "
                         f"runs ended first ({', '.join(f'{s:.1f}s' for s in ended)})")


def failure_report(root: Path, run: Run) -> str:
    """What a failed run said, and what its root's endpoint server logged (a request the server
    fails answers 500 with the exception's name only; its traceback is in the server's log)."""
    parts = [f"exit code {run.code}", f"--- stderr\n{run.err[-4000:]}", f"--- stdout\n{run.out[-2000:]}"]
    log = root / "serving" / "server.log"
    if log.exists():
        parts.append(f"--- {log}\n{log.read_text(errors='replace')[-6000:]}")
    return "\n".join(parts)
