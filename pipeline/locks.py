"""One run of a job at a time per storage root: a lock file the operating system releases.

Two ingests started together would both find a landing file new and both write it; two
preprocesses would both write a subject. So ``ingest`` and ``preprocess`` hold
``<root>/_locks/<job>.lock`` while they run: the second run waits for the first (saying
so, with the holder's pid), then finds nothing left to do. The lock is ``fcntl.flock``,
which the kernel drops when its holder dies, so a run killed with ``kill -9`` never
leaves a stale lock behind (the ``filelock`` package wraps the same call; the standard
library suffices here).

Roots that are not on the local file system (``dbfs:/``, ``abfss://``) are not locked
here: on Databricks the bundle's ``max_concurrent_runs: 1`` keeps one run per job.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.config import Config
from pipeline.report import Reporter

__all__ = ["LockTimeout", "root_lock", "lock_path"]

LOCK_DIR = "_locks"
_POLL_S = 0.2


class LockTimeout(RuntimeError):
    """Another run held the lock for longer than ``faults.lock_wait_s``."""


def lock_path(cfg: Config, job: str) -> Path:
    return cfg.local_root / LOCK_DIR / f"{job}.lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return "another run"
    return f"pid {pid}" if pid else "another run"


@contextmanager
def root_lock(cfg: Config, job: str, rep: Reporter | None = None) -> Iterator[None]:
    """Hold ``job``'s lock on the root for the block; wait up to ``faults.lock_wait_s`` for it."""
    if not cfg.is_local_root:
        yield
        return
    path = lock_path(cfg, job)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot open the {job} lock file {path}: {exc.strerror}") from exc
    try:
        deadline = time.monotonic() + cfg.faults.lock_wait_s
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() >= deadline:
                raise LockTimeout(f"another {job} run ({_holder(path)}) holds {path}; gave up after "
                                  f"{cfg.faults.lock_wait_s:g}s (faults.lock_wait_s)")
            if not said and rep is not None:
                rep.info(f"waiting for another {job} run on this root ({_holder(path)}, lock {path})")
                said = True
            time.sleep(_POLL_S)
        try:  # who holds it, for the message a waiting run prints (advisory only)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # closing drops the flock
