"""The retraining rule: k of the last n windows, the latest included (pure, no Spark)."""
from __future__ import annotations

import math

import pytest

from pipeline.config import RetrainRule
from pipeline.retrain_rule import apply_rule
from udfs.drift import psi

RULE = RetrainRule(metric="score_psi", threshold=0.2, k=2, n=5)


def windows(values):
    return [(f"w{i}", v) for i, v in enumerate(values)]


@pytest.mark.parametrize("values, fired", [
    ([0.0, 0.0, 0.0, 0.0, 0.5], False),  # 1 of 5
    ([0.0, 0.0, 0.5, 0.0, 0.5], True),   # 2 of 5, latest included
    ([0.5, 0.0, 0.5, 0.0, 0.0], False),  # 2 of 5, latest not
    ([0.0, 0.5, 0.5, 0.0, 0.5], True),   # 3 of 5
    ([0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5], False),  # old violations fall out of the last 5
])
def test_k_of_last_n_with_the_latest(values, fired):
    out = apply_rule(windows(values), RULE)
    assert out.fired is fired
    assert len(out.values) == min(5, len(values))


def test_below_threshold_rules_and_missing_values():
    rule = RetrainRule(metric="roc_auc", threshold=0.7, direction="below", k=2, n=3)
    out = apply_rule(windows([0.9, None, 0.6, float("nan"), 0.65]), rule)
    assert out.fired and out.windows == ("w0", "w2", "w4") and out.violated == 2
    assert not apply_rule([], rule).fired


def test_rule_rejects_k_above_n():
    with pytest.raises(ValueError):
        RetrainRule(k=4, n=3)


def test_psi_is_zero_for_the_same_sample_and_grows_with_shift():
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.normal(size=5000)
    assert psi(base, base) == pytest.approx(0.0, abs=1e-9)
    assert psi(base, base + 0.1) < 0.1 < psi(base, base + 1.0)
    assert math.isnan(psi(base, []))
