from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def test_defaults_load_and_derive_paths(tmp_path: Path):
    cfg = load_config(root=str(tmp_path), env={})
    assert cfg.signal.sfreq == 512.0
    assert cfg.preprocess.n_times == 71  # (0.6 - -0.1) s at 100 Hz, both ends included
    assert cfg.table("raw_eeg") == f"{tmp_path}/delta/raw_eeg"
    assert cfg.landing_dir == f"{tmp_path}/landing-zone"
    assert cfg.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"


def test_unknown_key_is_rejected_with_its_name(tmp_path: Path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text("preprocess:\n  l_frq: 0.5\n")
    with pytest.raises(ConfigError, match=r"preprocess\.l_frq: unknown key"):
        load_config(overlay, env={})


def test_invalid_value_names_the_key():
    with pytest.raises(ConfigError, match=r"training\.train_fraction"):
        load_config(env={}, overrides=["training.train_fraction=1.5"])
    with pytest.raises(ConfigError, match=r"preprocess"):
        load_config(env={}, overrides=["preprocess.h_freq=0.5"])
    with pytest.raises(ConfigError, match=r"serving\.workload_size"):
        load_config(env={}, overrides=["serving.workload_size=Huge"])


def test_precedence_defaults_file_env_overrides_root(tmp_path: Path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("training:\n  cv_folds: 3\n  seed: 7\nstorage:\n  root: /from/file\n")
    env = {"P300__TRAINING__CV_FOLDS": "4", "P300_ROOT": "/from/env", "UNRELATED": "x"}
    cfg = load_config(overlay, env=env)
    assert (cfg.training.cv_folds, cfg.training.seed, cfg.root) == (4, 7, "/from/env")
    cfg = load_config(overlay, root="/from/cli", env=env, overrides=["training.cv_folds=6"])
    assert (cfg.training.cv_folds, cfg.root) == (6, "/from/cli")


def test_a_relative_root_is_resolved_against_the_working_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overlay = tmp_path / "o.yaml"
    overlay.write_text("storage:\n  root: from-file\n")
    for cfg, name in [(load_config(env={}), "lakehouse"), (load_config(root="cli/../x", env={}), "x"),
                      (load_config(env={"P300_ROOT": "env"}), "env"), (load_config(overlay, env={}), "from-file")]:
        assert cfg.root == str(tmp_path / name)
        assert cfg.table("ingest_log") == f"{tmp_path / name}/delta/ingest_log"
    for uri in ("dbfs:/FileStore/p300", "s3://bucket/p300", "/Volumes/main/p300/files", "file:/tmp/p300"):
        assert load_config(root=uri, env={}).root == uri


def test_databricks_overlay_by_name_and_catalog_tables():
    cfg = load_config("conf/databricks.yaml", env={}, overrides=["storage.tables.features=main.p300.features"])
    assert cfg.root == "dbfs:/FileStore/tables/p300_files"
    assert cfg.serving.backend == "databricks" and cfg.spark.master is None
    assert cfg.table("features") == "main.p300.features"
    assert cfg.table("raw_eeg") == "dbfs:/FileStore/tables/p300_files/delta/raw_eeg"
    with pytest.raises(ConfigError, match="not on the local file system"):
        _ = cfg.local_root


def test_databricks_overlay_uses_unity_catalog_with_a_three_level_model():
    cfg = load_config("conf/databricks.yaml", env={})
    assert cfg.registry_uri == "databricks-uc" and cfg.registry.model_name.count(".") == 2


@pytest.mark.parametrize("sets", [["registry.registry_uri=databricks"],
                                  ["registry.registry_uri=databricks://my-profile"],
                                  ["registry.tracking_uri=databricks"]])  # the registry defaults to the tracking store
def test_the_workspace_model_registry_is_refused_naming_what_to_set(sets):
    with pytest.raises(ConfigError) as exc:
        load_config(env={}, overrides=sets)
    message = str(exc.value)
    assert "workspace model registry" in message and "no aliases" in message
    assert "registry.registry_uri: databricks-uc" in message and "catalog.schema.p300_classifier" in message
    with pytest.raises(ConfigError, match="workspace model registry"):  # also from the environment
        load_config(env={"MLFLOW_TRACKING_URI": "databricks"})


def test_unity_catalog_needs_a_three_level_model_name():
    with pytest.raises(ConfigError, match="three-level name"):
        load_config(env={}, overrides=["registry.registry_uri=databricks-uc"])
    cfg = load_config(env={}, overrides=["registry.tracking_uri=databricks", "registry.registry_uri=databricks-uc",
                                         "registry.model_name=main.p300.p300_classifier"])
    assert cfg.registry_uri == "databricks-uc"


def test_spark_submit_launch_leaves_the_master_to_the_launcher():
    assert load_config(env={"PYSPARK_GATEWAY_PORT": "1234"}).spark.master is None
    assert load_config(env={}).spark.master == "local[*]"


def test_missing_overlay_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad, env={})


def test_driver_jit_follows_the_cores_and_the_config():
    from pipeline.spark import C1_ONLY, driver_java_options

    auto = load_config(env={}).spark
    assert driver_java_options(auto, cores=2) == C1_ONLY and driver_java_options(auto, cores=1) == C1_ONLY
    assert driver_java_options(auto, cores=16) is None  # the JVM's own tiered JIT
    c1 = load_config(env={}, overrides=["spark.jit=c1", "spark.driver_java_options=-Dx=1"]).spark
    assert driver_java_options(c1, cores=16) == C1_ONLY + " -Dx=1"
    tiered = load_config(env={}, overrides=["spark.jit=tiered", "spark.driver_java_options=-Dx=1"]).spark
    assert driver_java_options(tiered, cores=2) == "-Dx=1"
    assert "-XX:ReservedCodeCacheSize=240m" in C1_ONLY.split()  # C1-only's 48 MB filled up, and the JIT stopped
    with pytest.raises(ConfigError, match=r"spark\.jit"):
        load_config(env={}, overrides=["spark.jit=c3"])


def test_driver_memory_and_java_options_reach_the_local_session(spark):
    from pipeline.spark import spark_conf_pairs

    cfg = load_config(env={}, overrides=["spark.jit=c1"])
    pairs = spark_conf_pairs(cfg)
    assert pairs["spark.driver.memory"] == "4g"
    log4j = f"-Dlog4j2.configurationFile=file:{REPO / 'conf' / 'log4j2.properties'}"
    derby = f"-Dderby.system.home={cfg.local_root / 'metastore'}"  # everything under the root
    assert pairs["spark.driver.extraJavaOptions"] == f"-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m {log4j} {derby}"
    assert pairs["spark.sql.warehouse.dir"] == f"{cfg.root}/spark-warehouse"
    unset = spark_conf_pairs(load_config(root="s3://b/p300", env={}, overrides=[
        "spark.driver_memory=null", "spark.jit=tiered", "spark.quiet=false"]))
    assert "spark.driver.memory" not in unset and "spark.driver.extraJavaOptions" not in unset
    with pytest.raises(ConfigError, match=r"spark\.driver_memory"):
        load_config(env={}, overrides=["spark.driver_memory=lots"])
    assert pairs["spark.python.unix.domain.socket.enabled"] == "true"
    if spark.sparkContext.master.startswith("local"):  # the suite's own session was started with them
        assert spark.sparkContext.getConf().get("spark.python.unix.domain.socket.enabled") == "true"
        assert spark._jvm.java.lang.Runtime.getRuntime().maxMemory() > 3 << 30
        jvm_args = list(spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
        assert "-XX:TieredStopAtLevel=1" in jvm_args and "-XX:ReservedCodeCacheSize=240m" in jvm_args
