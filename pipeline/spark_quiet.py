"""A quiet start for a driver JVM started here: what a user cannot act on stays out of normal output.

- Spark's log4j2 defaults (their banner lines, and Hadoop's NativeCodeLoader warning on every
  machine without Hadoop's native library) give way to the packaged ``conf/log4j2.properties``.
- The JDK prints ``WARNING: Using incubator modules: jdk.incubator.vector`` on every start (Spark's
  launcher always adds that module): the driver JVM's stderr passes through a thread that drops
  that line and forwards every other one.
- Spark stops Python workers that sat idle for a minute (between the jobs of a longer run); with
  the pinned PySpark, each such worker, finding its socket closed, prints a ``BrokenPipeError``
  traceback from ``pyspark/daemon.py`` (the daemon's stderr reaches ours through the JVM's;
  ``spark.python.daemon.killWorkerOnFlushFailure=false`` only prints another traceback). No task was
  running and nothing failed, so the same thread drops exactly that traceback; a traceback with
  any other frame or ending passes through (a failed task still fails its job with Spark's error).

``spark.quiet: false`` (``p300 --verbose``) leaves all three as Spark does them. Local sessions also
get ``SPARK_LOCAL_IP`` (pipeline/spark.py): the loopback address the driver binds to anyway, so
Spark has nothing to warn about when the host name resolves to a loopback address.
"""
from __future__ import annotations

import os
import subprocess
import threading
from importlib import resources
from pathlib import Path
from typing import IO, Mapping

__all__ = ["packaged_conf_dir", "log4j_file", "launch_filtered_gateway", "DROPPED", "IdleWorkerTracebacks"]

# lines of the driver JVM's stderr that never reach the user (unless spark.quiet is false)
DROPPED = (b"WARNING: Using incubator modules",)
_TRACEBACK = b"Traceback (most recent call last):"
_BROKEN_PIPE = b"BrokenPipeError: [Errno 32] Broken pipe"


class IdleWorkerTracebacks:
    """Holds back tracebacks whose frames are all in ``pyspark/daemon.py`` and drops them when
    they end in ``BrokenPipeError`` (an idle worker stopped by Spark); anything else ends the
    hold and is forwarded with what was held. Workers write line by line, so two such
    tracebacks may interleave: each ``BrokenPipeError`` line closes one of the held ones."""

    def __init__(self) -> None:
        self.held: list[bytes] = []
        self.open = 0

    def feed(self, line: bytes) -> list[bytes]:
        """The lines to forward now, given the next line."""
        bare = line.rstrip(b"\r\n")
        if bare == _TRACEBACK:
            self.held.append(line)
            self.open += 1
            return []
        if self.held:
            if (bare.startswith(b'  File "') and b"/pyspark/daemon.py\"" in bare) or bare.startswith(b"    "):
                self.held.append(line)  # a daemon frame, or a source or caret line under it
                return []
            if bare == _BROKEN_PIPE:
                self.open -= 1
                if self.open == 0:
                    self.held = []
                return []
        return self.flush() + [line]

    def flush(self) -> list[bytes]:
        held, self.held, self.open = self.held, [], 0
        return held


def packaged_conf_dir() -> Path | None:
    """The packaged conf folder: pipeline/conf in the wheel, conf/ in an editable checkout."""
    try:
        path = Path(str(resources.files("pipeline.conf")))
    except ModuleNotFoundError:  # editable install: the mapped subpackage is not importable
        path = Path(__file__).resolve().parent.parent / "conf"
    return path if path.is_dir() else None


def log4j_file() -> str | None:
    """The packaged quiet log4j2 configuration, when it is a plain file (it is, once installed)."""
    conf = packaged_conf_dir()
    path = conf / "log4j2.properties" if conf else None
    return str(path) if path and path.is_file() else None


def _forward(stream: IO[bytes], fd: int = 2) -> None:
    """Copy the JVM's stderr to ours, line by line, without the dropped lines and tracebacks."""
    tracebacks = IdleWorkerTracebacks()
    with stream:
        for line in iter(stream.readline, b""):
            if not line.startswith(DROPPED):
                for out in tracebacks.feed(line):
                    os.write(fd, out)
        for out in tracebacks.flush():
            os.write(fd, out)


def launch_filtered_gateway(conf_pairs: Mapping[str, str]) -> None:
    """Start the driver JVM as pyspark would (spark-submit with these --conf pairs, which must
    include spark.master and spark.app.name), its stderr through the filter; the next
    SparkContext uses it. Does nothing when pyspark already has a gateway."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    with SparkContext._lock:
        if SparkContext._gateway is not None:
            return
        gateway = launch_gateway(SparkConf().setAll(list(conf_pairs.items())),
                                 popen_kwargs={"stderr": subprocess.PIPE})
        proc = getattr(gateway, "proc", None)  # None: a JVM started by spark-submit, not by us
        if proc is not None and proc.stderr is not None:
            threading.Thread(target=_forward, args=(proc.stderr,), name="p300-jvm-stderr", daemon=True).start()
        SparkContext._ensure_initialized(gateway=gateway)
