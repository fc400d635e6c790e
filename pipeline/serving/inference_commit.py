"""The inference log's committer side: the committer process beside the server, and the
drain that a stop runs so that "stopped" means "every answered request is in Delta".

Every committer holds ``committer.lock`` for its whole life, so committers (one left by a
killed server, the next server's, a stop's drain) run one after another and none commits a
segment twice (the Delta txn version is the last segment committed)."""
from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline.serving.inference_log import _OPEN_SUFFIX, _SEG_PREFIX, _SEG_SUFFIX, WAL_DIR, _Committer


@contextmanager
def _committer_lock(wal_dir: Path) -> Iterator[None]:
    with open(wal_dir / "committer.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        yield


def run_committer(wal_dir: Path, table_uri: str, interval_s: float, parent_pid: int) -> int:
    """The committer process: commit closed segments every ``interval_s`` until SIGTERM or the
    server's death, then once more."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # below the server in the scheduler: on a saturated host the log lags (segments wait on
    # disk, nothing is lost) instead of taking CPU from requests; an idle moment catches up
    os.nice(10)
    with _committer_lock(wal_dir):
        committer = _Committer(wal_dir, table_uri, lambda msg: print(f"[p300-serving] {msg}", flush=True))
        while True:
            last = stop.is_set() or os.getppid() != parent_pid
            try:
                committer.commit_closed()
            except Exception as exc:  # noqa: BLE001 - the segments stay; the next round retries
                print(f"[p300-serving] inference log: commit failed, will retry: {type(exc).__name__}: {exc}",
                      flush=True)
            if last:
                return 0
            stop.wait(interval_s)


def drain(wal_dir: Path, table_uri: str, log: Callable[[str], None]) -> int:
    """Commit what a stopped server left: segments still open (its writer is gone) and closed
    ones a committer did not reach (the server was killed, or its committer was). Waits for
    any committer still running; call only once the server process is gone."""
    if not wal_dir.is_dir():
        return 0
    with _committer_lock(wal_dir):
        for left in wal_dir.glob(f"{_SEG_PREFIX}*{_OPEN_SUFFIX}"):
            left.rename(left.with_suffix(_SEG_SUFFIX))
        return _Committer(wal_dir, table_uri, log).commit_closed()


def drain_inference_log(cfg: Any, log: Callable[[str], None]) -> int:
    """``drain`` for this root's endpoint server; 0 when there is no local log."""
    location = cfg.table("inference_log")
    if not cfg.is_local_root or not location.startswith("/"):
        return 0
    return drain(cfg.serving_dir / WAL_DIR, location, log)


if __name__ == "__main__":  # the server's committer process (InferenceLog.start)
    sys.exit(run_committer(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
