import subprocess
import sys

import pandas as pd
import pytest

from pipeline.cli import build_parser, run


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ["synth", "ingest", "preprocess", "train", "deploy", "evaluate", "promote", "endpoint", "job", "demo"]:
        assert command in out


def test_console_script_help_runs():
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "p300" in proc.stdout


def test_synth_command_writes_loadable_files(root):
    code = run(["--root", str(root), "-q", "synth", "--subjects", "3", "--minutes", "0.25", "--sfreq", "256"], environ={})
    assert code == 0
    files = sorted((root / "landing-zone").glob("*.parquet"))
    assert [f.name for f in files] == [f"subject_0{i}_eeg_stim.parquet" for i in (1, 2, 3)]
    assert all(len(pd.read_parquet(f)) == 15 * 256 for f in files)


def test_bad_config_exits_2_naming_the_key(root, capsys):
    assert run(["--root", str(root), "--set", "signal.sfreqq=1", "synth", "--subjects", "1"], environ={}) == 2
    assert "signal.sfreqq" in capsys.readouterr().err
