"""Where the local driver JVM's class data sharing archive lives, and the options that map it.

Read by every local session start (pipeline/spark.py); ``p300 jvm-cache``
(pipeline/jvm_archive.py) builds the archive. The file name is a hash of pyspark's version
and the path, size and modification time of its jars and the Delta jars, which is what the
JVM checks before it maps an archive.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.config import Config
from pipeline.delta_jars import delta_artifact, delta_jar_paths

__all__ = ["QUIET", "archive_path", "archive_options"]

# the JVM reports a missing or unusable archive, and every class it skips while dumping, on stdout
QUIET = "-Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off"


def _environment_key(cfg: Config) -> str:
    import pyspark

    jars = sorted(Path(pyspark.__file__).parent.joinpath("jars").glob("*.jar"))
    delta = [Path(j) for j in delta_jar_paths(cfg)]
    # the JVM refuses an archive when any jar's size or modification time differs from the
    # build's (a reinstalled environment has the same jars with new times), so both are in the key
    parts = [pyspark.__version__, delta_artifact(cfg),
             *(f"{j}:{j.stat().st_size}:{int(j.stat().st_mtime)}" for j in [*jars, *delta])]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def archive_path(cfg: Config) -> Path | None:
    """Where this environment's archive lives (whether or not it exists); None when disabled."""
    if not cfg.spark.class_archive_dir:
        return None
    return Path(cfg.spark.class_archive_dir).expanduser() / f"p300-{_environment_key(cfg)}.jsa"


def archive_options(cfg: Config) -> str | None:
    """The driver JVM options that map this environment's archive, when there is one."""
    path = archive_path(cfg)
    return f"-XX:SharedArchiveFile={path} {QUIET}" if path is not None and path.is_file() else None
