"""The one-line message for a full or read-only root (pure: no Spark)."""
from __future__ import annotations

from pipeline.config import load_config
from pipeline.storage_errors import explain


def test_full_and_read_only_storage_are_named_with_their_path():
    cfg = load_config(root="/data/p300", env={})
    inner = OSError(28, "java.io.IOException: No space left on device")
    outer = RuntimeError("[TASK_WRITE_FAILED] Task failed while writing rows to file:/data/p300/delta/raw_eeg.")
    outer.__cause__ = inner
    assert explain(outer, cfg).startswith("No space left on device while writing file:/data/p300/delta/raw_eeg: ")
    ro = OSError(30, "cannot open the ingest lock file /data/p300/_locks/ingest.lock: Read-only file system")
    assert explain(ro, cfg).startswith("Read-only file system while writing /data/p300/_locks/ingest.lock: ")
    assert explain(ValueError("bad subject list"), cfg) is None
