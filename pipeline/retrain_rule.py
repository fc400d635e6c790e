"""The retraining rule: a pure function of one metric over the latest monitoring windows.

mlops-stacks' rule (its issue #156): retrain when at least ``k`` of the last ``n``
windows violate the threshold *and* the latest one does, so that one noisy window does
not retrain and a drift that has already gone away does not either. Windows where the
metric could not be computed (no labels for an AUC, no traffic) are not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from pipeline.config import RetrainRule

__all__ = ["RuleOutcome", "violates", "apply_rule"]


@dataclass(frozen=True)
class RuleOutcome:
    """The rule's verdict and the windows it read (oldest first)."""

    fired: bool
    windows: tuple[str, ...]
    values: tuple[float, ...]
    violations: tuple[bool, ...]
    reason: str

    @property
    def violated(self) -> int:
        return sum(self.violations)


def violates(value: float, rule: RetrainRule) -> bool:
    return value > rule.threshold if rule.direction == "above" else value < rule.threshold


def apply_rule(windows: Sequence[tuple[str, float | None]], rule: RetrainRule) -> RuleOutcome:
    """``windows``: (window label, metric value) oldest first; None or NaN values are skipped."""
    usable = [(w, float(v)) for w, v in windows if v is not None and not math.isnan(float(v))]
    last = usable[-rule.n:]
    flags = tuple(violates(v, rule) for _, v in last)
    names, values = tuple(w for w, _ in last), tuple(v for _, v in last)
    sign = ">" if rule.direction == "above" else "<"
    what = f"{rule.metric} {sign} {rule.threshold:g}"
    if not last:
        return RuleOutcome(False, names, values, flags, f"no window has {rule.metric} yet")
    count = sum(flags)
    fired = count >= rule.k and flags[-1]
    if fired:
        reason = f"{what} in {count} of the last {len(last)} windows, including the latest: retrain"
    elif count >= rule.k:
        reason = f"{what} in {count} of the last {len(last)} windows, but not in the latest: no retraining"
    else:
        reason = f"{what} in {count} of the last {len(last)} windows (needs {rule.k}): no retraining"
    return RuleOutcome(fired, names, values, flags, reason)
