"""Kill cases as pytest parameters: named kill points, then shares of the job's run time."""
from __future__ import annotations

import pytest


def kill_cases(job: str, points: list[str], fractions: list[float], sampled: set[str]) -> list:
    """``sampled`` ids run in CI; the rest only with ``--all-points``."""
    cases = [(f"{job}@{p}", ("point", p)) for p in points] + [(f"{job}@{f:.0%}", ("time", f)) for f in fractions]
    return [pytest.param(value, id=case_id, marks=[pytest.mark.sampled] if case_id in sampled else [])
            for case_id, value in cases]
