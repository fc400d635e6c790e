"""Named kill points: where the crash tests stop a job dead, as a power cut or ``kill -9`` would.

A job calls ``kill_point(cfg, "ingest.after_raw_commit")`` between two steps whose order
matters for recovery. Nothing happens unless the configuration names that point
(``faults.kill_at``, e.g. from the environment as ``P300__FAULTS__KILL_AT``); then the
process sends itself SIGKILL: no ``finally`` blocks, no atexit handlers, no flush of
anything the job had not already made durable. ``tests/faults/`` runs every job with
each of its points named and checks that a plain rerun converges (docs/reliability.md).
"""
from __future__ import annotations

import os
import signal
import sys

from pipeline.config import Config

__all__ = ["kill_point"]


def kill_point(cfg: Config, name: str) -> None:
    """Die here, at once, when the configuration names this point; otherwise do nothing."""
    if cfg.faults.kill_at != name:
        return
    # say where, so a test log shows which point fired; output already written is all that survives
    print(f"[p300] fault injection: SIGKILL at {name}", file=sys.stderr, flush=True)
    if os.getpgid(0) == os.getpid():  # we lead our process group: take the Spark JVM and workers along
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)  # else only this process (the JVM exits when its stdin closes)
