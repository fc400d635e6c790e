"""The quiet start of a local driver JVM (pipeline/spark_quiet.py), without starting one."""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.cli import run
from pipeline.spark_quiet import _forward, log4j_file


def test_the_stderr_filter_drops_the_incubator_line_and_forwards_the_rest(tmp_path: Path):
    lines = [b"WARNING: Using incubator modules: jdk.incubator.vector\n", b"09:00:01 WARN Something: matters\n",
             b"Exception in thread \"main\" java.lang.OutOfMemoryError\n", b"no newline at the end"]
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as w:
        w.write(b"".join(lines))
    out = tmp_path / "stderr"
    with open(out, "wb") as sink:
        _forward(os.fdopen(read_end, "rb"), fd=sink.fileno())
    assert out.read_bytes() == b"".join(lines[1:])


def test_the_packaged_log4j_configuration_quiets_what_nobody_can_act_on():
    text = Path(log4j_file()).read_text()
    assert "logger.nativecode.name = org.apache.hadoop.util.NativeCodeLoader" in text
    assert "logger.nativecode.level = error" in text and "rootLogger.level = warn" in text


def test_verbose_turns_the_quiet_start_off(monkeypatch, tmp_path: Path):
    import pipeline.synth

    seen: list[bool] = []
    monkeypatch.setattr(pipeline.synth, "main", lambda cfg, args, rep: seen.append(cfg.spark.quiet) or 0)
    assert run(["--root", str(tmp_path), "synth", "--subjects", "1"], environ={}) == 0
    assert run(["--verbose", "--root", str(tmp_path), "synth", "--subjects", "1"], environ={}) == 0
    assert seen == [True, False]
