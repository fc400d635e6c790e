"""A quiet start for a driver JVM started here: what a user cannot act on stays out of normal output.

- Spark's log4j2 defaults (their banner lines, and Hadoop's NativeCodeLoader warning on every
  machine without Hadoop's native library) give way to the packaged ``conf/log4j2.properties``.
- The JDK prints ``WARNING: Using incubator modules: jdk.incubator.vector`` on every start (Spark's
  launcher always adds that module): the driver JVM's stderr passes through a thread that drops
  that line and forwards every other one.

``spark.quiet: false`` (``p300 --verbose``) leaves both as Spark does them. Local sessions also
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

__all__ = ["packaged_conf_dir", "log4j_file", "launch_filtered_gateway", "DROPPED"]

# lines of the driver JVM's stderr that never reach the user (unless spark.quiet is false)
DROPPED = (b"WARNING: Using incubator modules",)


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
    """Copy the JVM's stderr to ours, line by line, without the dropped lines."""
    with stream:
        for line in iter(stream.readline, b""):
            if not line.startswith(DROPPED):
                os.write(fd, line)


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
