"""p300-pipeline: a Spark-native MLOps pipeline for P300 ERP classification.

Pins (see README, "Why these pins"): delta-spark 4.4.0 is the newest release whose
Spark 4.2 jar (io.delta:delta-spark_4.2_2.13) is on Maven Central; it accepts
pyspark <= 4.2.0. PySpark 4.2 does not fully support pandas 3, so pandas stays on 2.x.
"""
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent


def _requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [l.split("#")[0].strip() for l in lines if l.split("#")[0].strip() and not l.startswith("-")]


setup(
    name="p300-pipeline",
    version="0.1.0",
    description="Spark-native MLOps pipeline that classifies P300 event-related potentials in EEG",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["pipeline", "udfs", "pipeline.conf"],
    package_dir={"pipeline.conf": "conf"},
    package_data={"pipeline.conf": ["*.yaml", "*.properties"]},
    include_package_data=True,
    install_requires=_requirements(),
    extras_require={"test": ["pytest==8.4.2", "chispa==0.11.1"]},
    entry_points={
        "console_scripts": [
            "p300=pipeline.cli:main",
            # one per job task: the bundle's python_wheel_task entry_points (pipeline/jobs.py)
            "p300-ingest=pipeline.jobs:ingest_task",
            "p300-preprocess=pipeline.jobs:preprocess_task",
            "p300-train=pipeline.jobs:train_task",
            "p300-deploy=pipeline.jobs:deploy_task",
            "p300-evaluate=pipeline.jobs:evaluate_task",
            "p300-promote=pipeline.jobs:promote_task",
            # any p300 command under spark-submit with Delta (pipeline/submit.py)
            "p300-submit=pipeline.submit:main",
        ],
    },
    license="Apache-2.0",
)
