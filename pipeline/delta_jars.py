"""Delta's jars for a Spark the pipeline starts itself (a local session, spark-submit, a
Spark Connect server): the Maven coordinate matching the installed pyspark, and the jar
files from the local Maven repository (filled by ``./dev setup``), so no start touches
the network."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import Config

__all__ = ["SCALA", "delta_artifact", "delta_jar_paths"]

SCALA = "2.13"


def delta_artifact(cfg: Config) -> str:
    """Maven coordinate of the Delta jar matching the installed pyspark."""
    import pyspark

    major_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{major_minor}_{SCALA}:{cfg.spark.delta_version}"


def delta_jar_paths(cfg: Config, m2: Path | None = None) -> list[str]:
    """Explicit jars from config, else Delta's jars in the local Maven repo, else []."""
    if cfg.spark.delta_jars:
        missing = [j for j in cfg.spark.delta_jars if not Path(j).exists()]
        if missing:
            raise FileNotFoundError(f"spark.delta_jars: not found: {', '.join(missing)}")
        return list(cfg.spark.delta_jars)
    m2 = m2 or Path.home() / ".m2" / "repository"
    _, artifact, version = delta_artifact(cfg).split(":")
    jars = [
        m2 / "io" / "delta" / artifact / version / f"{artifact}-{version}.jar",
        m2 / "io" / "delta" / "delta-storage" / version / f"delta-storage-{version}.jar",
    ]
    return [str(j) for j in jars] if all(j.exists() for j in jars) else []
