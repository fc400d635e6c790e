"""`p300 jvm-cache`: a class data sharing (AppCDS) archive for the local driver JVM.

Every local command starts a fresh JVM that loads and verifies some twenty thousand Spark,
Delta, Parquet and Arrow classes, first at session start and again on each first use (the
first Delta table, the first Arrow UDF). A dynamic CDS archive (JDK 13+) holds those
classes already parsed and verified, and the JVM maps it at start. On the 2-core
development machine it halved session start (3.4 -> 1.7 s) and took about 2 s off a
first ingest (docs/performance.md).

The archive belongs to one set of jar files: its file name is a hash of pyspark's version
and the path, size and modification time of its jars and the Delta jars (what the JVM
checks before it maps an archive), so a changed or reinstalled environment simply has no
archive until the next ``p300 jvm-cache`` (``--prune`` removes the archives of others).
It is built in a separate process that runs a small ingest and preprocess on a
synthetic subject (so the classes those load are in it), and is renamed
into place only after that process's JVM has exited, so a session never maps a
half-written file. A JVM that cannot use it (another JDK) starts without it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.class_archive import QUIET as _QUIET, archive_path
from pipeline.config import Config, ConfigError
from pipeline.report import Reporter

__all__ = ["build", "other_archives", "main"]

def build(cfg: Config, rebuild: bool = False, rep: Reporter | None = None) -> Path:
    """Build the archive in a child process (see the module docstring); returns its path."""
    rep = rep or Reporter(quiet=True)
    target = archive_path(cfg)
    if target is None:
        raise ConfigError("spark.class_archive_dir is null: class data sharing is disabled")
    if cfg.spark.master is None:
        raise ConfigError("spark.master is null (spark-submit or Databricks): the archive is for local sessions")
    if target.is_file() and not rebuild:
        rep.info(f"up to date: {target} ({target.stat().st_size >> 20} MB)")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.building")
    t0 = time.perf_counter()
    with rep.stage(f"building {target.name}: ingest and preprocess of one synthetic subject in a JVM that dumps its classes"):
        # without this process's gateway variables, or the child would join its JVM instead of starting one
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY_")}
        proc = subprocess.run([sys.executable, "-m", "pipeline.jvm_archive", "--dump", str(tmp)],
                              input=cfg.model_dump_json(), text=True, capture_output=True, env=env)
    if proc.returncode or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building the class archive failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    os.replace(tmp, target)
    rep.info(f"wrote {target} ({target.stat().st_size >> 20} MB) in {time.perf_counter() - t0:.0f}s; "
             "local sessions map it from now on")
    return target


def other_archives(cfg: Config) -> list[Path]:
    """The archives beside this environment's: other environments', or this one's before a
    reinstall (the JVM would refuse those)."""
    target = archive_path(cfg)
    if target is None or not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.glob("p300-*.jsa") if p != target)


def _dump(cfg: Config, out: Path) -> None:
    """In the child: one small ingest + preprocess, then wait until the JVM has written ``out``."""
    from pyspark import SparkContext

    from pipeline.ingest import ingest
    from pipeline.preprocess import preprocess
    from pipeline.spark import get_spark
    from pipeline.synth import subject_file_name, synth_subject, write_subject_file

    with tempfile.TemporaryDirectory(prefix="p300-jvm-cache-") as root:
        cfg = cfg.model_copy(deep=True)
        cfg.storage.root = root
        cfg.spark.class_archive_dir = None  # dump from a JVM that maps no archive of ours
        cfg.spark.driver_java_options = " ".join(
            o for o in (cfg.spark.driver_java_options, f"-XX:ArchiveClassesAtExit={out}", _QUIET) if o)
        sfreq = cfg.signal.sfreq
        write_subject_file(synth_subject(1, minutes=0.5, n_channels=4, sfreq=sfreq, seed=0),
                           Path(cfg.landing_dir) / subject_file_name(1), sfreq)
        spark = get_spark(cfg)
        try:
            ok = ingest(spark, cfg).count("ingested") == 1 and preprocess(spark, cfg).count("ok") == 1
        finally:  # whatever happened, this process ends only after its JVM has
            spark.stop()
            gateway: Any = SparkContext._gateway
            proc = gateway.proc
            gateway.shutdown()
            proc.stdin.close()  # the gateway JVM exits on EOF, and dumps the archive on its way out
            proc.wait(timeout=600)
        if not ok:
            raise RuntimeError("the warm-up ingest or preprocess did not succeed")


def main(cfg: Config, args: Any, rep: Reporter) -> int:
    """`p300 jvm-cache [--rebuild] [--prune]`."""
    build(cfg, rebuild=getattr(args, "rebuild", False), rep=rep)
    others = other_archives(cfg)
    if others and getattr(args, "prune", False):
        for path in others:
            path.unlink(missing_ok=True)
        rep.info(f"removed {len(others)} archive(s) of other or older environments")
    elif others:
        size = sum(p.stat().st_size for p in others) >> 20
        rep.info(f"{len(others)} other archive(s) in {others[0].parent} ({size} MB), for other environments or "
                 "from before a reinstall: `p300 jvm-cache --prune` removes them")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="internal: the child process of `p300 jvm-cache`")
    ap.add_argument("--dump", required=True, type=Path)
    _dump(Config.model_validate_json(sys.stdin.read()), ap.parse_args().dump)
