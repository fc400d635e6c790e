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


DAEMON = b'  File "/venv/site-packages/pyspark/python/lib/pyspark.zip/pyspark/daemon.py", line %d, in %s\n'
HEADER = b"Traceback (most recent call last):\n"
BROKEN = b"BrokenPipeError: [Errno 32] Broken pipe\n"


def _filtered(data: bytes, tmp_path: Path) -> bytes:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as w:
        w.write(data)
    out = tmp_path / "stderr"
    with open(out, "wb") as sink:
        _forward(os.fdopen(read_end, "rb"), fd=sink.fileno())
    return out.read_bytes()


def test_the_stderr_filter_drops_idle_worker_tracebacks_even_interleaved(tmp_path: Path):
    one = HEADER + DAEMON % (262, b"manager") + DAEMON % (95, b"worker") + BROKEN
    # two workers stopped at once write their lines interleaved
    two = (HEADER + HEADER + DAEMON % (262, b"manager") + DAEMON % (95, b"worker") + BROKEN
           + DAEMON % (262, b"manager") + b"    code = worker(sock, authenticated)\n" + DAEMON % (95, b"worker") + BROKEN)
    kept = b"12:00:01 WARN TaskSetManager: Lost task 0.0\n"
    assert _filtered(one + kept + two + kept, tmp_path) == kept + kept


def test_the_stderr_filter_forwards_every_other_traceback(tmp_path: Path):
    other_frame = HEADER + DAEMON % (262, b"manager") + b'  File "/app/udfs/preprocess.py", line 3, in f\n' + BROKEN
    other_error = HEADER + DAEMON % (262, b"manager") + b"MemoryError\n"
    unfinished = HEADER + DAEMON % (262, b"manager")
    for data in (other_frame, other_error, unfinished):
        assert _filtered(data, tmp_path) == data


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
