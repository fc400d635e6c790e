"""The one place a SparkSession comes from.

On Databricks or under ``spark-submit`` a session already exists and is returned
as is. Otherwise a local session with Delta is built. Delta's jars are passed as
``spark.jars`` from the local Maven repository (filled by ``./dev setup`` with
``mvn dependency:get``), so session start never touches the network; only when the
jars are missing does it fall back to ``spark.jars.packages`` (Ivy download).
"""
from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from pipeline.class_archive import archive_options
from pipeline.config import Config, ConfigError, SparkConf as SparkSettings  # pyspark has a SparkConf too
from pipeline.delta_jars import delta_artifact, delta_jar_paths
from pipeline.spark_quiet import launch_filtered_gateway, log4j_file

__all__ = ["get_spark", "delta_artifact", "delta_jar_paths", "driver_java_options", "spark_conf_pairs", "C1_ONLY"]

# C1-only shrinks the code cache from 240 MB to 48 MB, and a long process filled that: the JVM then
# disables its JIT and runs everything interpreted. So C1-only gets the tiered default's size back.
C1_ONLY = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"


def driver_java_options(spark_cfg: SparkSettings, cores: int) -> str | None:
    """The driver JVM's options: the JIT's (``spark.jit``), then ``spark.driver_java_options``."""
    c1 = spark_cfg.jit == "c1" or (spark_cfg.jit == "auto" and cores <= 2)
    return " ".join(o for o in (C1_ONLY if c1 else None, spark_cfg.driver_java_options) if o) or None


def spark_conf_pairs(cfg: Config, for_tests: bool = False, class_archive: bool = False) -> dict[str, str]:
    """Spark settings for a local session with Delta (also used for spark-submit --conf);
    ``class_archive``: map the driver JVM's class archive when there is one (pipeline/jvm_archive.py)."""
    cores = os.cpu_count() or 2
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions or cores),
        "spark.default.parallelism": str(cfg.spark.shuffle_partitions or cores),
        "spark.ui.enabled": "false" if for_tests else str(cfg.spark.ui).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        # everything a run writes goes under the root, nothing into the working directory
        "spark.sql.warehouse.dir": cfg.path("spark-warehouse"),
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.adaptive.enabled": "true",
        "spark.python.worker.reuse": "true",
        # JVM <-> Python workers over Unix domain sockets instead of loopback TCP (Spark 4.1+):
        # 200 one-row mapInPandas tasks on local[2] took 3.8-4.5 s against 5.8-6.0 s
        "spark.python.unix.domain.socket.enabled": "true",
        # the driver's interpreter runs the Python workers too (venv, same packages)
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    if cfg.spark.driver_memory:
        # Spark's 1g default was too little: ingesting ten 33 MB files (their bytes through the
        # JVM) after three preprocess runs in one process failed on a fragmented 1g heap
        conf["spark.driver.memory"] = cfg.spark.driver_memory
    options = [driver_java_options(cfg.spark, cores)]
    log4j = log4j_file() if cfg.spark.quiet else None
    if log4j:
        options.append(f"-Dlog4j2.configurationFile=file:{log4j}")
    if cfg.is_local_root:  # Derby's files, should anything start a Hive metastore
        options.append(f"-Dderby.system.home={cfg.local_root / 'metastore'}")
    if class_archive:  # only for a driver JVM started here (get_spark): the archive is a file on this machine
        options.append(archive_options(cfg))
    java_options = " ".join(o for o in options if o)
    if java_options:
        conf["spark.driver.extraJavaOptions"] = java_options
    jars = delta_jar_paths(cfg)
    if jars:
        conf["spark.jars"] = ",".join(jars)
    else:
        conf["spark.jars.packages"] = delta_artifact(cfg)
    return conf


def get_spark(cfg: Config, for_tests: bool = False) -> SparkSession:
    """The active session if there is one, otherwise a local Delta-enabled session; a Spark
    Connect session when ``spark.remote`` is set."""
    if cfg.spark.remote:
        if _classic_context_running():
            # PySpark picks classic or Connect for the whole process (pyspark.sql.functions,
            # Observation, ... follow SPARK_CONNECT_MODE_ENABLED): one kind of session per process
            raise ConfigError(f"spark.remote={cfg.spark.remote}: this process already runs a classic Spark "
                              "session; run Spark Connect jobs in a process of their own")
        return SparkSession.builder.remote(cfg.spark.remote).appName(cfg.spark.app_name).getOrCreate()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if cfg.spark.master is None:
        # Databricks / spark-submit: the launcher configured the session
        return SparkSession.builder.appName(cfg.spark.app_name).getOrCreate()
    # A Python-launched SparkContext reads its workers' interpreter from PYSPARK_PYTHON only
    # (spark.pyspark.python is honoured by spark-submit alone): make it this interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if cfg.spark.master.startswith("local"):  # the address the driver binds to (spark.driver.host)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    pairs = {"spark.master": cfg.spark.master, "spark.app.name": cfg.spark.app_name,
             **spark_conf_pairs(cfg, for_tests, class_archive=True)}
    if cfg.spark.quiet:
        launch_filtered_gateway(pairs)
    builder = SparkSession.builder
    for key, value in pairs.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(cfg.spark.log_level)
    return session


def _classic_context_running() -> bool:
    from pyspark import SparkContext

    return SparkContext._active_spark_context is not None


def is_classic(spark: SparkSession) -> bool:
    """A session with a JVM in this process (local, spark-submit, a classic cluster), as
    opposed to a Spark Connect client (serverless, shared clusters, ``spark.remote``):
    only a classic one has ``sparkContext``, ``_jvm``, accumulators and the status tracker."""
    return not type(spark).__module__.startswith("pyspark.sql.connect")
