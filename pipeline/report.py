"""What users see: progress lines, timed stages and summary tables, on stderr/stdout."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence, TextIO

__all__ = ["Reporter", "format_table"]


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain fixed-width table; floats get 3 decimals."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return "" if v is None else str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line, sep] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body])


class Reporter:
    """Progress on stderr (so stdout stays parseable), results on stdout."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, quiet: bool = False,
                 progress_every_s: float = 5.0) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.quiet = quiet
        self.progress_every_s = progress_every_s  # how often long Spark jobs report (pipeline.job_progress)

    def info(self, msg: str) -> None:
        if not self.quiet:
            print(f"[p300] {msg}", file=self.err, flush=True)

    def warn(self, msg: str) -> None:
        print(f"[p300] WARNING: {msg}", file=self.err, flush=True)

    def result(self, msg: str = "") -> None:
        print(msg, file=self.out, flush=True)

    def table(self, rows: Sequence[Sequence[Any]], headers: Sequence[str], title: str | None = None) -> None:
        if title:
            self.result(title)
        self.result(format_table(rows, headers))

    def progress(self, done: int, total: int, what: str, unit: str | None = None,
                 seconds: float | None = None) -> None:
        """``what: done/total`` and, when given, ``unit done`` and the time so far."""
        tail = (f" {unit} done" if unit else "") + (f" ({seconds:.0f} s)" if seconds is not None else "")
        self.info(f"{what}: {done}/{total}{tail}")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self.info(f"{name} ...")
        try:
            yield
        except BaseException:
            self.info(f"{name} failed after {time.perf_counter() - start:.1f}s")
            raise
        self.info(f"{name} done in {time.perf_counter() - start:.1f}s")
