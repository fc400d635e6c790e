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


# What the wheel needs, as ranges with real floors. On a Databricks ML runtime the cluster's
# own numpy, pandas, scikit-learn, pyarrow and (from MLflow 3 on) mlflow must stay, so no
# upper bounds there. Supported runtimes: Databricks Runtime 17.3 LTS ML and later (Spark
# 4.0+, Python 3.12: DataFrame.toArrow needs Spark 4), on a job cluster or serverless
# (environment version 4); where the runtime's MLflow is older than 3, pip upgrades it for
# the task. PySpark is not a requirement: a cluster or serverless brings its own (PyPI's
# pyspark would shadow it), so it is the extra "local" for a machine of one's own.
# requirements.txt holds the exact pins of the local development and CI environment.
INSTALL_REQUIRES = [
    "numpy>=1.26", "scipy>=1.11", "pandas>=2.0,<3", "pyarrow>=14",
    "scikit-learn>=1.4",  # cross_validate / cross_val_predict params= (pipeline/subject_cv.py)
    "mne>=1.6",  # FIR design on the driver (mne.filter.create_filter; udfs/preprocess.py)
    "mlflow>=3.0",  # pyfunc.log_model(name=...) (pipeline/training_run.py)
    "databricks-sdk>=0.40", "pydantic>=2.5", "pyyaml>=6", "matplotlib>=3.7",
    "httpx>=0.25", "orjson>=3.9",  # invoke: the endpoint client and its JSON
    "psutil>=5.9", "tenacity>=8.3", "urllib3>=2",  # process checks; invoke: retries, Retry-After
    "pyriemann>=0.12", "array-api-extra>=0.8.2",  # xdawn_ts; pyriemann 0.12 breaks on array-api-extra < 0.8.2
]
# The local serving endpoint (`p300 endpoint serve`, deploy with serving.backend local); a
# cluster never serves HTTP itself, so these stay off it: pip install p300-pipeline[serve]
SERVE_REQUIRES = [
    "fastapi>=0.110", "uvicorn>=0.27", "httptools>=0.6",
    "deltalake>=1.0",  # the endpoint's inference log (pipeline/serving/inference_log.py)
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
    extras_require={"serve": SERVE_REQUIRES, "local": SPARK_REQUIRES,
                    "test": SPARK_REQUIRES + SERVE_REQUIRES + ["pytest>=8", "chispa>=0.10"]},
    # p300, one per job task (the bundle's python_wheel_task entry points), p300-submit
    entry_points={"console_scripts": console_scripts()},
    license="Apache-2.0",
)
