"""`p300 jvm-cache`: the driver JVM's class data sharing archive, built and mapped for real."""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.class_archive import archive_options, archive_path
from pipeline.jvm_archive import build, main, other_archives
from pipeline.report import Reporter
from pipeline.spark import C1_ONLY, spark_conf_pairs


def test_the_archive_is_mapped_only_when_it_exists_and_only_by_local_sessions(tmp_path):
    cfg = load_config(env={}, overrides=[f"spark.class_archive_dir={tmp_path}", "spark.jit=c1"])
    path = archive_path(cfg)
    assert path.parent == tmp_path and archive_options(cfg) is None
    before = spark_conf_pairs(cfg, class_archive=True)["spark.driver.extraJavaOptions"]
    assert before.startswith(C1_ONLY) and "SharedArchiveFile" not in before  # no archive yet
    path.write_bytes(b"")
    assert archive_options(cfg).startswith(f"-XX:SharedArchiveFile={path} ")
    local = spark_conf_pairs(cfg, class_archive=True)["spark.driver.extraJavaOptions"]
    assert local.startswith(C1_ONLY) and f" -XX:SharedArchiveFile={path} " in local  # after the JIT's options
    submitted = spark_conf_pairs(cfg)["spark.driver.extraJavaOptions"]
    assert submitted.startswith(C1_ONLY) and "SharedArchiveFile" not in submitted  # spark-submit: not this machine's file
    off = load_config(env={}, overrides=["spark.class_archive_dir=null"])
    assert archive_path(off) is None
    with pytest.raises(ConfigError, match="class_archive_dir"):
        build(off)
    with pytest.raises(ConfigError, match="spark.master"):
        build(load_config(env={"PYSPARK_GATEWAY_PORT": "1"}, overrides=[f"spark.class_archive_dir={tmp_path}"]))

    # another set of jars, another archive
    jars = [tmp_path / "delta-spark.jar", tmp_path / "delta-storage.jar"]
    for j in jars:
        j.write_bytes(b"x")
    one = archive_path(load_config(env={}, overrides=[f"spark.class_archive_dir={tmp_path}",
                                                      f"spark.delta_jars=[{jars[0]},{jars[1]}]"]))
    jars[0].write_bytes(b"xx")
    other = archive_path(load_config(env={}, overrides=[f"spark.class_archive_dir={tmp_path}",
                                                        f"spark.delta_jars=[{jars[0]},{jars[1]}]"]))
    assert one != other != path
    # the same bytes reinstalled (a new virtual environment): the JVM refuses the old archive,
    # so the key must change too
    os.utime(jars[0], (1_000_000_000, 1_000_000_000))
    touched = archive_path(load_config(env={}, overrides=[f"spark.class_archive_dir={tmp_path}",
                                                          f"spark.delta_jars=[{jars[0]},{jars[1]}]"]))
    assert touched not in (one, other, path)


@pytest.mark.spark  # builds the archive in a local Spark session, then starts one on it
def test_build_then_a_new_session_loads_spark_from_the_archive(tmp_path):
    cfg = load_config(env={}, overrides=[f"spark.class_archive_dir={tmp_path}", "spark.master=local[2]",
                                         "spark.jit=c1"])
    path = build(cfg)
    assert path == archive_path(cfg) and path.stat().st_size > 10 << 20
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing half-written left over
    mtime = path.stat().st_mtime_ns
    assert build(cfg) == path and path.stat().st_mtime_ns == mtime  # up to date: not built again

    stale = tmp_path / "p300-0123456789abcdef.jsa"  # another environment's, or this one's before a reinstall
    stale.write_bytes(b"old")
    assert other_archives(cfg) == [stale]
    said = io.StringIO()
    assert main(cfg, argparse.Namespace(rebuild=False, prune=False), Reporter(err=said)) == 0
    assert stale.exists() and "p300 jvm-cache --prune" in said.getvalue()  # kept unless asked
    assert main(cfg, argparse.Namespace(rebuild=False, prune=True), Reporter(quiet=True)) == 0
    assert not stale.exists() and path.is_file() and path.stat().st_mtime_ns == mtime

    log = tmp_path / "classes.log"
    script = textwrap.dedent(f"""
        from pipeline.config import load_config
        from pipeline.spark import get_spark
        cfg = load_config(env={{}}, overrides=["spark.class_archive_dir={tmp_path}", "spark.master=local[1]",
                                              "spark.jit=c1", "spark.driver_java_options=-Xlog:class+load=info:file={log}"])
        spark = get_spark(cfg)
        assert spark.range(3).count() == 3
        spark.stop()
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY_")}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    loaded = log.read_text()
    for cls in ("org.apache.spark.SparkContext", "io.delta.sql.DeltaSparkSessionExtension"):
        assert f"{cls} source: shared objects file (top)" in loaded  # (top): our archive, not the JDK's
