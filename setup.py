"""p300-pipeline: a Spark-native MLOps pipeline for P300 ERP classification.

Pins (see README, "Why these pins"): delta-spark 4.4.0 is the newest release whose
Spark 4.2 jar (io.delta:delta-spark_4.2_2.13) is on Maven Central; it accepts
pyspark <= 4.2.0. PySpark 4.2 does not fully support pandas 3, so pandas stays on 2.x.
"""
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from pipeline.commands import console_scripts  # noqa: E402  (standard library only: the one command table)


# What the wheel needs, as ranges: on a Databricks ML runtime the cluster's own pyspark,
# numpy, pandas, scikit-learn and mlflow must stay. Spark itself is an extra ("local")
# because a cluster brings its own; requirements.txt holds the exact pins of the local
# development and CI environment (./dev installs it).
INSTALL_REQUIRES = [
    "numpy>=1.26", "scipy>=1.11", "pandas>=2.0,<3", "pyarrow>=14", "scikit-learn>=1.3", "mne>=1.6",
    "mlflow>=2.16", "databricks-sdk>=0.40", "pydantic>=2.5", "pyyaml>=6", "matplotlib>=3.7",
    "httpx>=0.25", "fastapi>=0.110", "uvicorn>=0.27", "orjson>=3.9",
    "deltalake>=1.0",  # the serving endpoint's inference log (pipeline/serving/inference_log.py)
    "psutil>=5.9", "tenacity>=8.3", "urllib3>=2",  # serving: process checks; invoke: retries, Retry-After
    "pyriemann>=0.12", "array-api-extra>=0.8.2",  # xdawn_ts; pyriemann 0.12 breaks on array-api-extra < 0.8.2
]
SPARK_REQUIRES = ["pyspark>=4.0.1,<=4.2.0", "delta-spark>=4.0.1,<=4.4.0"]


setup(
    name="p300-pipeline",
    version="0.1.0",
    description="Spark-native MLOps pipeline that classifies P300 event-related potentials in EEG",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["pipeline", "pipeline.serving", "udfs", "pipeline.conf"],
    package_dir={"pipeline.conf": "conf"},
    package_data={"pipeline.conf": ["*.yaml", "*.properties"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"local": SPARK_REQUIRES, "test": SPARK_REQUIRES + ["pytest>=8", "chispa>=0.10"]},
    # p300, one per job task (the bundle's python_wheel_task entry points), p300-submit
    entry_points={"console_scripts": console_scripts()},
    license="Apache-2.0",
)
