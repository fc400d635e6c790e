"""Kill -9 during ingest, preprocess and the job that chains them, then rerun: the tables,
the logs and the landing zone end as an uncrashed run leaves them (docs/reliability.md)."""
from __future__ import annotations

import pytest
from fault_cases import kill_cases

pytestmark = [pytest.mark.faults, pytest.mark.spark]

INGEST = kill_cases("ingest", ["ingest.after_raw_commit", "ingest.after_log", "ingest.after_first_move"],
                    [0.35, 0.7, 0.9], sampled={"ingest@ingest.after_raw_commit"})
PREPROCESS = kill_cases("preprocess", ["preprocess.after_features_commit"], [0.4, 0.8],
                        sampled={"preprocess@preprocess.after_features_commit"})
JOB = kill_cases("job", ["job.after_ingest", "ingest.after_log", "preprocess.after_features_commit"], [0.5],
                 sampled={"job@job.after_ingest"})


@pytest.mark.parametrize("kill", INGEST)
def test_ingest_converges(fault_case, invariants, kill):
    root, ref = fault_case("ingested", ("ingest",), kill)
    invariants.data(root, ref)


@pytest.mark.parametrize("kill", PREPROCESS)
def test_preprocess_converges(fault_case, invariants, kill):
    root, ref = fault_case("preprocessed", ("preprocess",), kill)
    invariants.data(root, ref, through="preprocessed")


@pytest.mark.parametrize("kill", JOB)
def test_job_ingest_and_preprocess_converges(fault_case, invariants, kill):
    """The job runner (`p300 job`), killed between or inside its tasks, then run again whole."""
    root, ref = fault_case("preprocessed", ("job", "ingest_and_preprocess"), kill, start="landing")
    invariants.data(root, ref, through="preprocessed")
