"""Ingest and preprocess on a root that runs out of space, or turns read-only, mid-run: the run
fails saying what and where; a rerun once space is back converges. The root is a size-limited
tmpfs this test mounts and unmounts itself (skipped where mounting is not allowed)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.spark]


def _mount(path: Path, size_kb: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root or CAP_SYS_ADMIN")


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


@pytest.fixture
def small_root(tmp_path: Path):
    mnt = tmp_path / "mnt"
    _mount(mnt, 64)
    yield mnt / "root"
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _used_kb(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) // 1024 + 1


def test_disk_full_then_read_only_then_space_again(prepared, small_root, invariants, p300):
    src = prepared.root("landing")
    prepared.root("preprocessed")  # the reference
    mnt = small_root.parent
    _remount(mnt, f"size={_used_kb(src) + 256}k")  # the landing zone fits; raw_eeg does not
    shutil.copytree(src, small_root)

    full = p300(small_root, "ingest")
    assert full.code == 1
    assert "No space left on device" in full.err and str(small_root) in full.err, full.err[-3000:]
    assert sorted(p.name for p in Path(small_root, "landing-zone").iterdir())  # no file lost

    _remount(mnt, "ro")
    read_only = p300(small_root, "ingest")
    assert read_only.code == 1
    assert "Read-only file system" in read_only.err and str(small_root) in read_only.err, read_only.err[-3000:]

    _remount(mnt, "rw,size=262144k")
    assert p300(small_root, "ingest").code == 0
    invariants.data(small_root, prepared.root("ingested"))

    _remount(mnt, f"size={_used_kb(small_root) + 64}k")  # features will not fit
    full = p300(small_root, "preprocess")
    assert full.code == 1 and "No space left on device" in full.err, full.err[-3000:]
    _remount(mnt, "rw,size=262144k")
    assert p300(small_root, "preprocess").code == 0
    invariants.data(small_root, prepared.root("preprocessed"), through="preprocessed")
