"""Ingest and preprocess on a root that runs out of space, or turns read-only, mid-run: the run
fails saying what and where; a rerun once space is back converges. The root is a size-limited
tmpfs this test mounts and unmounts itself (skipped where mounting is not allowed)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import run_p300

pytestmark = [pytest.mark.faults, pytest.mark.spark]

ROOMY_KB = 256 * 1024


def _mount(path: Path, options: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)


def _remount(path: Path, options: str) -> None:
    done = subprocess.run(["mount", "-o", f"remount,{options}", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, f"remount {options} of {path}: {done.stderr.strip()}"


def _used_kb(mnt: Path) -> int:
    """What the tmpfs itself counts as used (whole pages per file, not the files' sizes: a
    smaller size limit than that is refused by the remount)."""
    st = os.statvfs(mnt)
    return (st.f_blocks - st.f_bfree) * st.f_frsize // 1024


@pytest.fixture
def small_mount(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = _mount(mnt, f"size={ROOMY_KB}k")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); "
                    "needs root or CAP_SYS_ADMIN")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)
    if os.path.ismount(mnt):
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_then_read_only_then_space_again(prepared, small_mount, invariants, p300_here):
    # the failing runs are p300 processes of their own, as a user's are: a failed Spark write
    # in a long-lived driver can hold a file open for writing, and then remount,ro is refused
    root = small_mount / "root"
    shutil.copytree(prepared.root("landing"), root)
    ingested, preprocessed = prepared.root("ingested"), prepared.root("preprocessed")  # the references
    landing = sorted(p.name for p in (root / "landing-zone").iterdir())

    _remount(small_mount, f"size={_used_kb(small_mount) + 256}k")  # the landing zone fits; raw_eeg does not
    full = run_p300(root, "ingest")
    assert full.code == 1
    assert "No space left on device" in full.err and str(root) in full.err, full.err[-3000:]
    assert sorted(p.name for p in (root / "landing-zone").iterdir()) == landing  # no file lost

    _remount(small_mount, "ro")
    read_only = run_p300(root, "ingest")
    assert read_only.code == 1
    assert "Read-only file system" in read_only.err and str(root) in read_only.err, read_only.err[-3000:]

    _remount(small_mount, f"rw,size={ROOMY_KB}k")
    again = p300_here(root, "ingest")
    assert again.code == 0, again.err[-3000:]
    invariants.data(root, ingested)

    _remount(small_mount, f"size={_used_kb(small_mount) + 64}k")  # features will not fit
    full = run_p300(root, "preprocess")
    assert full.code == 1
    assert "No space left on device" in full.err and str(root) in full.err, full.err[-3000:]
    _remount(small_mount, f"rw,size={ROOMY_KB}k")
    again = p300_here(root, "preprocess")
    assert again.code == 0, again.err[-3000:]
    invariants.data(root, preprocessed, through="preprocessed")
