"""Files on the driver's own file system, with plain Python: the landing zone, archive/ and
quarantine/ when there is no JVM to ask (Spark Connect: serverless jobs, shared clusters).

On Databricks, Unity Catalog Volumes are mounted on the driver as ordinary files under
``/Volumes/<catalog>/<schema>/<volume>/...``, so a storage root there is read, listed and
renamed like a local directory (os.rename within a Volume is a server-side move). This is
the path chosen over the Files API: no client, no token, the same code as a local run.
``file:`` URIs and plain paths are handled; other schemes (dbfs:/, s3a:/, abfss:/) need a
classic session's Hadoop FileSystem (pipeline/storage.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["FileInfo", "is_local", "local_path", "info", "list_dir", "exists", "make_dirs", "move", "read_range"]


@dataclass(frozen=True)
class FileInfo:
    """One directory entry; ``path`` is fully qualified (file:/..., dbfs:/...).

    ``local_path`` is the same entry as an operating-system path when it is on the local
    file system (scheme ``file``), so that Python code on the executors can open it."""

    path: str
    name: str
    size: int
    mtime_ms: int
    is_dir: bool
    local_path: str | None = None


def is_local(path: str) -> bool:
    """A plain path or a ``file:`` URI (what this module can reach)."""
    scheme = urlparse(path).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path(path: str) -> Path:
    if not is_local(path):
        raise ValueError(f"{path}: not a local path; its scheme needs a classic Spark session's Hadoop FileSystem")
    return Path(urlparse(path).path if path.startswith("file:") else path).absolute()


def info(path: str) -> FileInfo | None:
    p = local_path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    return FileInfo(f"file:{p}", p.name, 0 if p.is_dir() else int(st.st_size), int(st.st_mtime * 1000), p.is_dir(),
                    str(p))


def list_dir(directory: str) -> list[FileInfo]:
    """Entries sorted by name; [] when the directory does not exist."""
    p = local_path(directory)
    if not p.is_dir():
        return []
    found = (info(str(child)) for child in p.iterdir())
    return sorted((f for f in found if f is not None), key=lambda f: f.name)


def exists(path: str) -> bool:
    return local_path(path).exists()


def make_dirs(path: str) -> None:
    local_path(path).mkdir(parents=True, exist_ok=True)


def move(src: str, dst: str) -> None:
    """Rename src to dst; never overwrites an existing dst."""
    s, d = local_path(src), local_path(dst)
    if d.exists():
        raise FileExistsError(f"cannot move {src}: {dst} already exists")
    if not s.exists():
        raise FileNotFoundError(f"cannot move {src}: it does not exist")
    d.parent.mkdir(parents=True, exist_ok=True)
    os.rename(s, d)


def read_range(path: str, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` (negative: from the end)."""
    p = local_path(path)
    size = p.stat().st_size
    start = size + offset if offset < 0 else offset
    if start < 0 or length < 0 or start + length > size:
        raise EOFError(f"{path}: cannot read {length} bytes at {offset} of a {size}-byte file")
    with open(p, "rb") as f:
        f.seek(start)
        data = f.read(length)
    if len(data) != length:
        raise EOFError(f"{path}: the file ended {length - len(data)} bytes early")
    return data
