"""One line for a write that the storage refused (full disk, read-only file system, quota),
instead of a JVM stack trace: the reason, the path, and what to do."""
from __future__ import annotations

import re

from pipeline.config import Config

__all__ = ["explain"]

_REASONS = ("No space left on device", "Read-only file system", "Disk quota exceeded")


def explain(exc: BaseException, cfg: Config) -> str | None:
    """The storage problem behind ``exc`` (looked for through its text and causes), or None."""
    texts, seen = [], set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        texts.append(str(e))
        e = e.__cause__ or e.__context__
    text = "\n".join(texts)
    reason = next((r for r in _REASONS if r in text), None)
    if reason is None:
        return None
    root = cfg.root.removeprefix("file:")
    match = re.search(rf"(?:file:)?{re.escape(root)}[^\s'\"(),;]*", text)
    path = match.group(0).rstrip(".:") if match else cfg.root
    return (f"{reason} while writing {path}: the run stopped there; free space (or make the storage writable) "
            f"and run it again, the rerun completes what this one started")
