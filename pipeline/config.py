"""Typed pipeline configuration.

One object, loaded from the packaged ``conf/pipeline.yaml``, then an optional overlay
file (``--conf``), then the environment (``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI``
as ``registry.*``, ``P300_ROOT``, ``P300__SECTION__KEY``), then
explicit overrides (``--root``, ``--set section.key=value``). Unknown keys and invalid
values fail with a message naming the key, so a typo never silently falls back to a
default. Modules receive this object; none reads the environment itself.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.config_sources import ConfigError, default_conf_text
from pipeline.config_sources import deep_merge as _deep_merge
from pipeline.config_sources import format_errors as _format_errors
from pipeline.config_sources import read_yaml as _read_yaml
from pipeline.config_sources import set_dotted as _set_dotted

__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "default_conf_text",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class Tables(_Strict):
    raw_eeg: str = "raw_eeg"
    ingest_log: str = "ingest_log"
    features: str = "features"
    preprocess_log: str = "preprocess_log"
    predictions: str = "predictions"
    subject_reference: str = "subject_reference"
    # monitoring (docs/monitoring.md); on Databricks inference_log names the endpoint's payload table
    inference_log: str = "inference_log"
    monitor_profile: str = "monitor_profile"
    monitor_drift: str = "monitor_drift"
    monitor_flags: str = "monitor_flags"
    labels: str = "labels"


class Storage(_Strict):
    root: str = Field("./lakehouse", validate_default=True)
    landing: str = "landing-zone"
    archive: str = "archive"
    quarantine: str = "quarantine"
    raw_chunk_samples: int = Field(16384, ge=64)  # samples per raw_eeg row (udfs/raw_chunks.py)
    tables: Tables = Field(default_factory=Tables)

    @field_validator("root")
    @classmethod
    def _absolute(cls, root: str) -> str:
        """A relative local root is resolved once, here, against the working directory (Spark, Delta and
        MLflow then get absolute paths); URIs (dbfs:, s3://, file:) and absolute paths stay as they are."""
        return root if re.match(r"[A-Za-z][\w+.-]*:", root) else os.path.abspath(os.path.expanduser(root))


class EventIds(_Strict):
    nontarget: int = 1
    target: int = 2

    @model_validator(mode="after")
    def _distinct(self) -> "EventIds":
        if self.nontarget == self.target or min(self.nontarget, self.target) <= 0:
            raise ValueError("event ids must be distinct positive integers")
        return self


class Signal(_Strict):
    sfreq: float = Field(512.0, gt=0)
    channel_prefix: str = "eeg_ch"
    stim_column: str = "stim"
    event_ids: EventIds = Field(default_factory=EventIds)
    line_freq: float = Field(50.0, gt=0)
    erp_channel: str = "eeg_ch11"


class Preprocess(_Strict):
    l_freq: float = Field(1.0, ge=0)
    h_freq: float = Field(20.0, gt=0)
    notch: bool = True
    tmin: float = -0.1
    tmax: float = 0.6
    baseline: tuple[float, float] = (-0.1, 0.0)
    reject_peak_to_peak_uv: float | None = Field(100.0, gt=0)
    resample_hz: float = Field(100.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "Preprocess":
        if self.h_freq <= self.l_freq:
            raise ValueError(f"h_freq ({self.h_freq}) must be above l_freq ({self.l_freq})")
        if self.tmax <= self.tmin:
            raise ValueError(f"tmax ({self.tmax}) must be after tmin ({self.tmin})")
        b0, b1 = self.baseline
        if not (self.tmin <= b0 < b1 <= self.tmax):
            raise ValueError(f"baseline {self.baseline} must lie inside [tmin, tmax] = [{self.tmin}, {self.tmax}]")
        if self.h_freq >= self.resample_hz / 2:
            raise ValueError(f"h_freq ({self.h_freq}) must be below the Nyquist of resample_hz ({self.resample_hz})")
        return self

    @property
    def n_times(self) -> int:
        """Samples per channel in a feature vector: depends on the configuration alone."""
        from math import floor

        return int(floor(round((self.tmax - self.tmin) * self.resample_hz, 6))) + 1


ClassifierName = Literal["lda", "lda_plain", "xdawn_ts"]  # pipeline/classifiers.py (a test keeps them equal)


class Training(_Strict):
    train_fraction: float = Field(0.5, gt=0, le=1)
    min_subjects: int = Field(2, ge=1)
    cv_folds: int = Field(5, ge=2)
    seed: int = 42
    # model: classifier registry, per-subject alignment, `p300 compare`
    classifier: ClassifierName = "xdawn_ts"
    alignment: Literal["none", "recenter"] = "none"
    candidates: list[str] = Field(default_factory=lambda: ["lda", "xdawn_ts", "xdawn_ts+recenter"], min_length=1)
    calibration_fraction: float = Field(0.2, gt=0, lt=1)  # unlabelled-calibration protocol: the first 20%
    compare_protocol: Literal["trialwise", "calibration"] = "trialwise"  # what `p300 compare` ranks by
    n_jobs: int | None = Field(None, ge=1)  # folds fitted in parallel; null: one per core

    @model_validator(mode="before")
    @classmethod
    def _old_model_key(cls, data: Any) -> Any:
        """The old ``training.model`` (shrinkage_lda | lda) names lda | lda_plain and wins over the default."""
        if isinstance(data, dict) and "model" in data:
            data = {**data, "classifier": {"shrinkage_lda": "lda", "lda": "lda_plain"}.get(data["model"], data["model"])}
            data.pop("model")
        return data


class Registry(_Strict):
    model_name: str = "p300-classifier"
    experiment: str = "p300-training"
    tracking_uri: str | None = None
    registry_uri: str | None = None  # null: the tracking store's

    @model_validator(mode="after")
    def _registry_with_aliases(self) -> "Registry":
        """The pipeline moves aliases: refuse the Databricks workspace registry (no aliases);
        Unity Catalog names models catalog.schema.model."""
        uri = (self.registry_uri or self.tracking_uri or "").lower()
        if uri.split("://")[0] == "databricks":
            raise ValueError(f"registry_uri {uri!r} is the Databricks workspace model registry, which has no "
                             "aliases: set registry.registry_uri: databricks-uc and a three-level "
                             "registry.model_name: catalog.schema.p300_classifier")
        if uri.split("://")[0] == "databricks-uc" and self.model_name.count(".") != 2:
            raise ValueError(f"model_name {self.model_name!r}: Unity Catalog (databricks-uc) needs a three-level "
                             "name, catalog.schema.model (e.g. main.p300.p300_classifier)")
        return self


class Serving(_Strict):
    backend: Literal["local", "databricks"] = "local"
    endpoint_name: str = "p300-endpoint"
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    token: str | None = None
    workload_size: Literal["Small", "Medium", "Large"] = "Small"
    scale_to_zero: bool = True
    max_body_mb: float = Field(64, gt=0)
    ready_timeout_s: float = Field(600, gt=0)
    # cold starts (docs/serving.md): deploy's wait for a first build (the SDK waiter's default);
    # the local server's simulated scale-to-zero (idle seconds, then 503s for N s; null: never)
    first_build_timeout_s: float = Field(1200, gt=0)
    simulate_cold_start_after_idle_s: float | None = Field(None, ge=0)
    simulate_cold_start_s: float = Field(30, ge=0)


class Evaluation(_Strict):
    experiment: str = "p300-evaluation"
    batch_size: int = Field(64, ge=1)
    concurrency: int = Field(4, ge=1)
    retries: int = Field(5, ge=0)
    request_timeout_s: float = Field(30.0, gt=0)
    # cold starts: for this long, 429/503/504 with Retry-After are waited out, not counted as retries
    cold_start_window_s: float = Field(600, ge=0)


class SparkConf(_Strict):
    master: str | None = "local[*]"
    app_name: str = "p300-pipeline"
    shuffle_partitions: int | None = Field(None, ge=1)
    ui: bool = False
    # Heap of the driver JVM a local session starts (local mode runs the tasks in it too).
    # Ingest holds a landing file that is not on the local file system whole in it, several
    # copies per running task; queries and Delta commits need room beside that.
    driver_memory: str | None = Field("4g", pattern=r"^[0-9]+[kKmMgGtT]?$")
    # That driver's JIT (docs/performance.md). c1: C1 only, which was faster on 2 cores, where
    # C2's compiler threads compete with jobs of seconds; tiered: the JVM's C1 + C2, which was
    # faster on 16 cores; auto: c1 on a machine with at most 2 cores, else tiered.
    jit: Literal["auto", "c1", "tiered"] = "auto"
    # Extra JVM options for that driver, after the JIT's.
    driver_java_options: str | None = None
    # Where `p300 jvm-cache` writes the driver JVM's class data sharing archive, which local
    # sessions then map (pipeline/jvm_archive.py); null: never use one.
    class_archive_dir: str | None = "~/.cache/p300-pipeline/jvm"
    log_level: str = "WARN"
    quiet: bool = True  # drop JVM startup lines a user cannot act on (pipeline/spark_quiet.py); p300 --verbose: false
    delta_version: str = "4.4.0"
    delta_jars: list[str] = Field(default_factory=list)
    # Spark Connect server (sc://host:port; docs/architecture.md); null: a classic session
    remote: str | None = Field(None, pattern=r"^sc://")


class RetrainRule(_Strict):
    """Retrain when at least k of the last n windows violate, and the latest does (mlops-stacks #156)."""
    metric: str = "score_psi"  # a monitor metric name (docs/monitoring.md lists them)
    threshold: float = 0.2
    direction: Literal["above", "below"] = "above"  # violation: metric above (or below) threshold
    k: int = Field(2, ge=1)
    n: int = Field(5, ge=1)
    served_entity: str = "champion"  # whose windows the rule reads

    @model_validator(mode="after")
    def _k_of_n(self) -> "RetrainRule":
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must not exceed n ({self.n})")
        return self


class Monitoring(_Strict):
    inference_log: bool = True       # the local endpoint server logs every request
    flush_interval_s: float = Field(1.0, gt=0)  # the log's commits; also on a segment_mb segment
    segment_mb: float = Field(64.0, gt=0)
    fsync: Literal["none", "flush", "request"] = "none"  # the inference log's fsyncs (docs/monitoring.md)
    window_s: int = Field(3600, ge=1)  # window length (Lakehouse Monitoring granularity)
    lateness_s: float = Field(60.0, ge=0)  # a window is processed once it closed this long ago
    max_payload_kb: int | None = Field(None, ge=0)  # larger request bodies are logged as null; None: all
    psi_bins: int = Field(10, ge=2)
    input_sample_epochs: int = Field(2000, ge=0)  # channel RMS from about this many epochs per window; 0: all
    experiment: str = "p300-monitoring"
    rule: RetrainRule = Field(default_factory=RetrainRule)


class Faults(_Strict):
    # Crash tests (pipeline/faults.py): the named kill point at which a job SIGKILLs itself; null: none.
    kill_at: str | None = None
    # How long ingest/preprocess wait for another run of the same job on this root (pipeline/locks.py).
    lock_wait_s: float = Field(3600.0, ge=0)


class Config(_Strict):
    storage: Storage = Field(default_factory=Storage)
    signal: Signal = Field(default_factory=Signal)
    preprocess: Preprocess = Field(default_factory=Preprocess)
    training: Training = Field(default_factory=Training)
    registry: Registry = Field(default_factory=Registry)
    serving: Serving = Field(default_factory=Serving)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    spark: SparkConf = Field(default_factory=SparkConf)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    faults: Faults = Field(default_factory=Faults)

    # ---- derived locations (no I/O) -------------------------------------------------
    @property
    def root(self) -> str:
        return self.storage.root.rstrip("/") or "/"

    def path(self, *parts: str) -> str:
        """A location under the storage root, as a URI-ish string usable by Spark and Hadoop."""
        return "/".join([self.root, *[p.strip("/") for p in parts]])

    @property
    def landing_dir(self) -> str:
        return self.path(self.storage.landing)

    @property
    def archive_dir(self) -> str:
        return self.path(self.storage.archive)

    @property
    def quarantine_dir(self) -> str:
        return self.path(self.storage.quarantine)

    def table(self, name: str) -> str:
        """Delta path (or catalog name, when the configured name has dots) of a table."""
        value = getattr(self.storage.tables, name)
        if "." in value and "/" not in value:
            return value
        return self.path("delta", value)

    @property
    def is_local_root(self) -> bool:
        return "://" not in self.root and not self.root.startswith("dbfs:")

    @property
    def local_root(self) -> Path:
        if not self.is_local_root:
            raise ConfigError(f"storage.root {self.root!r} is not on the local file system")
        return Path(self.root).expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        if self.registry.tracking_uri:
            return self.registry.tracking_uri
        return f"sqlite:///{self.local_root / 'mlflow' / 'mlflow.db'}"

    @property
    def registry_uri(self) -> str:
        return self.registry.registry_uri or self.tracking_uri

    @property
    def artifact_location(self) -> str | None:
        """Artifact root for new experiments on the embedded store; None lets the server decide."""
        if self.registry.tracking_uri:
            return None
        return (self.local_root / "mlflow" / "artifacts").as_uri()

    @property
    def serving_dir(self) -> Path:
        return self.local_root / "serving"

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---- loading ------------------------------------------------------------------------

ENV_PREFIX = "P300__"


def load_config(
    conf_file: str | os.PathLike[str] | None = None,
    root: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | list[str] | None = None,
) -> Config:
    """Build the configuration; later sources win: defaults < file < env < overrides < root."""
    data = _read_yaml(default_conf_text(), "conf/pipeline.yaml")
    sources = ["conf/pipeline.yaml"]
    if conf_file:
        path = Path(conf_file)
        if path.exists():
            text = path.read_text()
        else:  # a packaged overlay by name, e.g. --conf databricks.yaml on a cluster
            try:
                text = default_conf_text(path.name)
            except ConfigError:
                raise ConfigError(f"--conf {conf_file}: file not found") from None
        data = _deep_merge(data, _read_yaml(text, str(conf_file)))
        sources.append(str(conf_file))
    env = env or {}
    for var, key in (("MLFLOW_TRACKING_URI", "tracking_uri"), ("MLFLOW_REGISTRY_URI", "registry_uri")):
        if env.get(var):  # MLflow's own variables name a tracking server; P300__REGISTRY__* still win
            data.setdefault("registry", {})[key] = env[var]
            sources.append(var)
    for key, value in sorted(env.items()):
        if key.startswith(ENV_PREFIX):
            _set_dotted(data, key[len(ENV_PREFIX):].lower().replace("__", "."), value)
            sources.append(key)
    if env.get("PYSPARK_GATEWAY_PORT") and not any(k.startswith(ENV_PREFIX + "SPARK__MASTER") for k in env):
        # launched by spark-submit (or a Databricks driver): the launcher owns the master
        data.setdefault("spark", {})["master"] = None
        sources.append("spark-submit")
    if env.get("P300_ROOT"):
        data.setdefault("storage", {})["root"] = env["P300_ROOT"]
        sources.append("P300_ROOT")
    items = overrides.items() if isinstance(overrides, Mapping) else [
        tuple(o.split("=", 1)) if "=" in o else (o, None) for o in (overrides or [])
    ]
    for key, value in items:
        if value is None:
            raise ConfigError(f"override {key!r} must look like section.key=value")
        _set_dotted(data, key, value)
        sources.append(f"--set {key}")
    if root:
        data.setdefault("storage", {})["root"] = root
        sources.append("--root")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, " < ".join(sources))) from None
