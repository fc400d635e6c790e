"""Traffic splits: the one place that decides percentages and draws a served entity by them.

Shared by the client (what deploy asks for) and the server (how it routes, and the split
it gives a config that names no routes), so both sides split the same way.
"""
from __future__ import annotations

import random
from typing import Sequence

from pipeline.registry_names import CHAMPION

__all__ = ["even_split", "desired_routes", "Router"]


def even_split(names: Sequence[str]) -> dict[str, int]:
    """100 split evenly over ``names`` (the first names take the remainder)."""
    share, extra = divmod(100, len(names))
    return {n: share + (1 if i < extra else 0) for i, n in enumerate(names)}


def desired_routes(names: Sequence[str]) -> dict[str, int]:
    """Champion 100 / challenger 0 when both are served (the challenger is reached through its
    direct URL until promoted); 100 for a single entity; otherwise an even split."""
    names = list(names)
    if len(names) > 1 and CHAMPION in names:
        return {n: (100 if n == CHAMPION else 0) for n in names}
    return even_split(names)


class Router:
    """Draws a served entity name with probability proportional to its route's percentage."""

    def __init__(self, routes: Sequence[tuple[str, int]]) -> None:
        total, cumulative = 0, []
        for name, pct in routes:
            if pct > 0:
                total += pct
                cumulative.append((total, name))
        self._cumulative = tuple(cumulative)

    def __call__(self) -> str:
        draw = random.random() * 100
        for bound, name in self._cumulative:
            if draw < bound:
                return name
        return self._cumulative[-1][1]
