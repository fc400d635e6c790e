import subprocess
import sys

import pandas as pd
import pytest

from pipeline import commands, jobs
from pipeline.arguments import build_parser
from pipeline.cli import run


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ["synth", "ingest", "preprocess", "train", "deploy", "evaluate", "promote", "endpoint", "job", "demo"]:
        assert command in out
    for command in commands.COMMANDS:
        assert f"    {command.name} " in out and command.help in " ".join(out.split())


def test_every_command_of_the_table_has_a_module_with_main():
    import ast
    import importlib.util

    for command in commands.COMMANDS:
        spec = importlib.util.find_spec(command.module)
        assert spec is not None and spec.origin, command
        tree = ast.parse(open(spec.origin).read())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), command.module


def test_every_task_command_has_its_console_script_function():
    for name in commands.TASK_COMMANDS:
        command = commands.COMMAND[name]
        module, function = commands.CONSOLE_SCRIPTS[command.entry_point].split(":")
        assert module == "pipeline.jobs" and function == f"{name}_task"
        assert callable(getattr(jobs, function)) and function in dir(jobs)
    with pytest.raises(AttributeError):
        jobs.synth_task  # noqa: B018  (not a job task: no console script)
    with pytest.raises(ValueError, match="unknown task command"):
        jobs.run_task("synth", [])


def test_global_options_come_from_the_table():
    args = build_parser().parse_args(["--conf", "c.yaml", "--root", "/r", "--set", "a=1", "--set", "b=2", "-q",
                                      "deploy"])
    assert (args.conf, args.root, args.overrides, args.quiet) == ("c.yaml", "/r", ["a=1", "b=2"], True)
    assert {o.dest for o in commands.GLOBAL_OPTIONS} == {"conf", "root", "overrides", "quiet", "verbose"}


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


def test_demo_refuses_too_few_subjects_before_it_starts(tmp_path, capsys):
    root = tmp_path / "lakehouse"
    assert run(["--root", str(root), "demo", "--subjects", "3"], environ={}) == 2
    assert "--subjects 3: the demo needs at least 4" in capsys.readouterr().err
    assert not root.exists()  # nothing was synthesized
