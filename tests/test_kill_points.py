"""The kill-point hook and the root lock, in real child processes (no Spark)."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from pipeline.config import load_config
from pipeline.faults import kill_point

CHILD = textwrap.dedent("""
    import os, sys
    from pipeline.config import load_config
    from pipeline.faults import kill_point
    from pipeline.locks import root_lock
    from pipeline.report import Reporter
    cfg = load_config(root=sys.argv[1], env=os.environ)
    with root_lock(cfg, "ingest", Reporter()):
        print("locked", os.getpid(), flush=True)
        kill_point(cfg, "test.inside_lock")
        if sys.argv[2] == "stdin":  # hold the lock until the test closes our stdin
            sys.stdin.read()
    print("released", flush=True)
""")


def _child(root: Path, hold: bool, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), "stdin" if hold else "-"],
                            env={**_base_env(), **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("P300")}


def test_kill_point_does_nothing_unless_named(tmp_path):
    cfg = load_config(root=str(tmp_path), env={"P300__FAULTS__KILL_AT": "ingest.after_raw_commit"})
    assert cfg.faults.kill_at == "ingest.after_raw_commit"
    kill_point(cfg, "ingest.after_log")  # another point: returns


def test_a_named_kill_point_dies_with_sigkill_and_the_lock_goes_with_it(tmp_path):
    victim = _child(tmp_path, True, P300__FAULTS__KILL_AT="test.inside_lock")
    out, err = victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert "locked" in out and "released" not in out
    assert "SIGKILL at test.inside_lock" in err
    # the kernel dropped the dead holder's lock: the next run takes it at once
    nxt = _child(tmp_path, False)
    out, err = nxt.communicate(timeout=60)
    assert nxt.returncode == 0 and "waiting" not in out, err


def test_a_second_run_waits_for_the_first_and_says_why(tmp_path):
    first = _child(tmp_path, True)
    assert first.stdout.readline().startswith("locked")
    second = _child(tmp_path, False)
    said = second.stderr.readline()  # blocks until the second run reports that it waits
    assert f"waiting for another ingest run on this root (pid {first.pid}" in said
    assert second.poll() is None  # still waiting: the first holds the lock
    first.communicate(input="", timeout=60)
    out2, _ = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0
    assert out2.startswith("locked")


def test_a_run_that_cannot_wait_longer_refuses_with_the_lock_path(tmp_path):
    first = _child(tmp_path, True)
    assert first.stdout.readline().startswith("locked")
    try:
        second = _child(tmp_path, False, P300__FAULTS__LOCK_WAIT_S="0.5")
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1
        assert "LockTimeout: another ingest run" in err and str(tmp_path / "_locks" / "ingest.lock") in err
    finally:
        first.kill()
        first.communicate()
