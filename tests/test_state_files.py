"""The endpoint server's state files: atomic writes that a kill -9 never leaves half done,
and no temporary file of a killed writer left behind for good."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from pipeline.serving.process import write_json


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_write_json_is_private_and_replaces_the_file(tmp_path):
    path = tmp_path / "serving" / "server.json"
    write_json(path, {"pid": 1})
    write_json(path, {"pid": 2})
    assert json.loads(path.read_text()) == {"pid": 2}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["server.json"]


def test_a_killed_writers_temporary_file_goes_and_a_live_ones_stays(tmp_path):
    path = tmp_path / "server.json"
    orphan = tmp_path / f".server.json.{_dead_pid()}.tmp"   # killed between open and rename
    live = tmp_path / f".server.json.{os.getppid()}.tmp"    # a writer still running
    other = tmp_path / f".endpoints.json.{_dead_pid()}.tmp"  # another file's: not this write's business
    for p in (orphan, live, other):
        p.write_text("{")
    write_json(path, {"pid": 3})
    assert not orphan.exists() and live.exists() and other.exists()
    assert json.loads(path.read_text()) == {"pid": 3}
