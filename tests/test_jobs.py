"""Jobs: `p300 job NAME`, the wheel's task entry points, and spark-submit.

The wheel tests build the real wheel (``setup.py bdist_wheel`` on a copy of the tree) and
read its metadata, as Databricks does when a python_wheel_task looks its ``entry_point``
up under ``package_name``. The bundle's own checks are in tests/test_bundle.py.
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from bundle_files import REPO, bundle
from pipeline import commands, job_runner
from pipeline.arguments import build_parser, parse_global_options, task_arguments
from pipeline.cli import run
from pipeline.config import load_config
from pipeline.spark import driver_java_options


# ---- the wheel -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> dict[str, Any]:
    """Build the wheel from a copy of the working tree; its name, entry points and file list."""
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.py", "requirements.txt", "README.md", "MANIFEST.in"):
        shutil.copy2(REPO / name, src / name)
    for folder in ("pipeline", "udfs", "conf"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "setup.py", "-q", "bdist_wheel", "-d", "dist"], cwd=src,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = (src / "dist").glob("*.whl")
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        meta = zf.read(f"{dist_info}/METADATA").decode()
        parser = configparser.ConfigParser(delimiters=("=",))
        parser.optionxform = str  # entry point names are case sensitive
        parser.read_string(zf.read(f"{dist_info}/entry_points.txt").decode())
    name = re.search(r"^Name: (.+)$", meta, re.M).group(1).strip()
    points = {ep: target.strip() for ep, target in parser["console_scripts"].items()}
    return {"path": whl, "name": name, "console_scripts": points, "files": names, "metadata": meta}


def test_wheel_requirements_have_real_floors_and_serving_in_an_extra(wheel):
    from packaging.requirements import Requirement

    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in wheel["metadata"].splitlines()
            if line.startswith("Requires-Dist:")]
    base = {r.name.lower(): r for r in reqs if r.marker is None}
    serve = {r.name.lower() for r in reqs if r.marker is not None and r.marker.evaluate({"extra": "serve"})}
    server_side = {"fastapi", "uvicorn", "httptools", "deltalake"}
    assert server_side <= serve and not (server_side | {"pyspark", "delta-spark"}) & set(base)
    assert not base["mlflow"].specifier.contains("2.22.0") and base["mlflow"].specifier.contains("3.0.0")
    assert not base["scikit-learn"].specifier.contains("1.3.2")  # cross_validate(params=...) is 1.4
    spark = [r for r in reqs if r.name == "pyspark"]
    assert spark and all(not r.specifier.contains("3.5.3") for r in spark)  # DataFrame.toArrow: Spark 4
    # the pinned development environment satisfies every range the wheel declares
    pins = dict(line.split("#")[0].strip().split("==") for line in (REPO / "requirements.txt").read_text().splitlines()
                if "==" in line.split("#")[0])
    for r in reqs:
        if r.name.lower() in pins:
            assert r.specifier.contains(pins[r.name.lower()], prereleases=True), (str(r), pins[r.name.lower()])


def test_every_task_names_the_wheel_and_one_of_its_entry_points(wheel):
    _, bundle_jobs = bundle()
    assert bundle_jobs, "no jobs found under resources/"
    for key, (path, job) in bundle_jobs.items():
        for task in job["tasks"]:
            where = f"{path.name}: task {task['task_key']}"
            if "condition_task" in task:
                continue
            wt = task["python_wheel_task"]
            assert wt["package_name"] == wheel["name"], where
            assert wt["entry_point"] in wheel["console_scripts"], f"{where}: {wt['entry_point']} not in the wheel"
            module, func = wheel["console_scripts"][wt["entry_point"]].split(":")
            assert callable(getattr(__import__(module, fromlist=[func]), func)), where
    # the wheel carries what the entry points and `--conf databricks.yaml` need
    assert {"pipeline/jobs.py", "pipeline/driver.py", "pipeline/conf/databricks.yaml"} <= set(wheel["files"])
    # the wheel's console scripts are the command table's: p300, one per task command, p300-submit
    assert wheel["console_scripts"] == commands.CONSOLE_SCRIPTS
    tasks = {c.entry_point for c in commands.COMMANDS if c.task}
    assert tasks == {t.entry_point for job in commands.JOBS.values() for t in job}  # each task runs in a job


# ---- entry points ----------------------------------------------------------------------------------

def test_global_options_are_found_anywhere_in_a_task_command_line():
    argv = ["--target", "both", "--root", "/r", "--set", "a.b=1", "--batch-size", "8", "-q", "--conf=x.yaml"]
    globals_, rest = commands.split_global_options(argv)
    assert globals_ == ["--root", "/r", "--set", "a.b=1", "-q", "--conf=x.yaml"]
    assert rest == ["--target", "both", "--batch-size", "8"]
    ns = parse_global_options(argv)
    assert (ns.root, ns.overrides, ns.quiet, ns.conf) == ("/r", ["a.b=1"], True, "x.yaml")


def test_wheel_entry_point_parses_sys_argv_like_a_wheel_task(wheel, root, monkeypatch, capsys):
    """Look the entry point up in the wheel as Databricks does, call it without arguments,
    parameters in sys.argv."""
    ep = metadata.EntryPoint("p300-evaluate", wheel["console_scripts"]["p300-evaluate"], "console_scripts")
    monkeypatch.setattr(sys, "argv", ["p300-pipeline", "--root", str(root), "--target", "nobody"])
    with pytest.raises(SystemExit) as exc:
        ep.load()()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: p300" in err and "--target" in err and "'nobody'" in err


def test_task_arguments_carry_the_job_parameter_and_the_global_options():
    job_args = build_parser().parse_args(["--root", "/r", "-q", "job", "evaluate_model", "--target", "both"])
    (task,) = commands.JOBS["evaluate_model"]
    args = task_arguments(task, job_args, {"target": job_args.target})
    assert (args.command, args.target, args.root, args.quiet) == ("evaluate", "both", "/r", True)
    assert args.batch_size is None  # the command's own defaults, as `p300 evaluate` would have them


# ---- p300 job ------------------------------------------------------------------------------------

@pytest.mark.spark
def test_job_runs_its_tasks_in_order_through_the_real_modules(root, capsys):
    # an empty landing zone: ingest has nothing to do, then preprocess finds no raw_eeg; both succeed
    code = run(["--root", str(root), "--set", "spark.master=local[2]", "job", "ingest_and_preprocess"], environ={})
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    firsts = [next(i for i, line in enumerate(out) if line.startswith(prefix))
              for prefix in ("ingest:", "preprocess:", "job ingest_and_preprocess: 2 task(s) done")]
    assert firsts == sorted(firsts)


@pytest.mark.spark
def test_job_stops_at_the_first_failed_task_with_its_error(root, capsys):
    # a real train on an empty root refuses (no features table): deploy must not run
    code = run(["--root", str(root), "--set", "spark.master=local[2]", "job", "train_and_deploy_challenger"],
               environ={})
    err = capsys.readouterr().err
    assert code != 0
    assert "features" in err and "task train failed" in err and "not run: deploy" in err
    assert "task deploy" not in err.replace("not run: deploy", "")
    assert not (root / "serving").exists()


def test_job_reports_an_exception_in_a_task_and_stops(cfg, monkeypatch, capsys):
    import pipeline.train as train_module

    def broken(cfg, args, rep):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(train_module, "main", broken)
    args = build_parser().parse_args(["job", "train_and_deploy_challenger"])
    from pipeline.report import Reporter

    assert job_runner.main(cfg, args, Reporter()) == 1
    err = capsys.readouterr().err
    assert "task train failed (RuntimeError: disk on fire); not run: deploy" in err


# ---- spark-submit ---------------------------------------------------------------------------------

def _printed(capsys, argv: list[str]) -> list[str]:
    import shlex

    from pipeline import submit

    assert submit.main(argv) == 0
    return shlex.split(capsys.readouterr().out.strip())


def test_submit_prints_spark_submit_with_delta_for_a_cluster(capsys, monkeypatch):
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    cmd = _printed(capsys, ["--print", "--master", "spark://10.1.2.3:7077", "--spark-conf", "spark.executor.memory=2g",
                            "--", "--root", "/shared/p300", "job", "ingest_and_preprocess"])
    assert Path(cmd[0]).name == "spark-submit" and Path(cmd[0]).exists()
    assert cmd[cmd.index("--master") + 1] == "spark://10.1.2.3:7077"
    confs = dict(c.split("=", 1) for c in (cmd[i + 1] for i, a in enumerate(cmd) if a == "--conf"))
    assert confs["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert confs["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert confs["spark.pyspark.python"] == sys.executable and confs["spark.executor.memory"] == "2g"
    assert "spark.driver.host" not in confs  # executors on other hosts must reach the driver
    java = confs["spark.driver.extraJavaOptions"]  # the config's options and the quiet log4j file
    config_options = driver_java_options(load_config(env={}).spark, os.cpu_count() or 2)
    assert java.startswith(f"{config_options or ''} -Dlog4j2.configurationFile=file:".lstrip())
    jars = cmd[cmd.index("--jars") + 1].split(",") if "--jars" in cmd else []
    packages = cmd[cmd.index("--packages") + 1] if "--packages" in cmd else ""
    assert any("delta-spark_" in j and Path(j).exists() for j in jars) or packages.startswith("io.delta:delta-spark_")
    app = cmd.index(next(a for a in cmd if a.endswith("driver.py")))
    assert cmd[app:] == [str(REPO / "pipeline" / "driver.py"), "--root", "/shared/p300", "job", "ingest_and_preprocess"]


def test_submit_on_local_binds_the_driver_to_loopback(capsys):
    cmd = _printed(capsys, ["--print", "--master", "local[2]", "--", "-q", "ingest"])
    assert "spark.driver.host=127.0.0.1" in cmd and "spark.driver.bindAddress=127.0.0.1" in cmd


def test_submit_needs_the_p300_command_after_a_double_dash(capsys):
    from pipeline import submit

    with pytest.raises(SystemExit) as exc:
        submit.main(["--master", "local[2]", "ingest"])
    assert exc.value.code == 2 and "after `--`" in capsys.readouterr().err


def test_shipped_code_archive_holds_the_packages_and_their_conf(tmp_path):
    from pipeline.submit import code_archive

    path = code_archive(tmp_path)
    assert path.name.startswith("p300-code-") and code_archive(tmp_path) == path  # same content, same file
    names = set(zipfile.ZipFile(path).namelist())
    assert {"pipeline/__init__.py", "pipeline/cli.py", "udfs/__init__.py", "pipeline/conf/pipeline.yaml",
            "pipeline/conf/databricks.yaml"} <= names
