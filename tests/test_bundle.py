"""The Databricks bundle: its job files are what resources/generate.py writes from the command
table, in two variants (job cluster, serverless); every job parses as Databricks' own typed
job class (databricks-bundles), so a misspelt field fails here; each target's variables
give the same valid configuration through either variant."""
from __future__ import annotations

import copy
import importlib.util
from typing import Any

import pytest
from databricks.bundles.jobs import Job

from bundle_files import REPO, bundle, resolve, variables
from pipeline import commands
from pipeline.arguments import build_parser, parse_global_options
from pipeline.commands import split_global_options
from pipeline.config import load_config

TARGETS = ["dev", "prod"]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate", REPO / "resources" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def typed_job(job: dict[str, Any]) -> Job:
    """The job as Databricks' typed class: raises ValueError on a field the Jobs API does not have."""
    return Job.from_dict(job)


def test_job_files_are_what_the_generator_writes():
    files = _generator().bundle_files()
    on_disk = {p.name for p in (REPO / "resources").glob("*.yml")}
    assert on_disk == set(files), "resources/ holds exactly the generated job files"
    stale = [name for name, text in files.items() if (REPO / "resources" / name).read_text() != text]
    assert stale == [], f"run `python resources/generate.py`: {stale} differ from the command table"


def test_every_job_of_both_variants_follows_the_command_table():
    gen = _generator()
    root, bundle_jobs = bundle()
    assert root["artifacts"]["p300_wheel"]["type"] == "whl"
    assert set(bundle_jobs) == {gen.job_key(j, v) for j in commands.JOBS for v in gen.VARIANTS}
    for name, tasks in commands.JOBS.items():
        assert build_parser().parse_args(["job", name]).name == name  # `p300 job` runs the same jobs
        for variant in gen.VARIANTS:
            key = gen.job_key(name, variant)
            path, job = bundle_jobs[key]
            assert path.name == f"{key}.yml", "one file per job, named for it"
            assert {p["name"]: p["default"] for p in job.get("parameters", [])} == commands.JOB_PARAMETERS[name]
            wheel_tasks = [t for t in job["tasks"] if "condition_task" not in t]
            assert [t["task_key"] for t in wheel_tasks] == [t.key for t in tasks]
            refs = {p: f"{{{{job.parameters.{p}}}}}" for p in commands.JOB_PARAMETERS[name]}
            for task, expected in zip(wheel_tasks, tasks):
                wheel = task["python_wheel_task"]
                assert (wheel["package_name"], wheel["entry_point"]) == ("p300-pipeline", expected.entry_point)
                assert wheel["parameters"][:2 + len(expected.params)] == ["--conf", "databricks.yaml",
                                                                          *expected.argv(refs)]
                if variant == "serverless":  # no cluster: the job's environment on every task
                    assert task["environment_key"] == job["environments"][0]["environment_key"]
                    assert not {"job_cluster_key", "libraries", "new_cluster", "existing_cluster_id"} & set(task)
                else:
                    assert task["job_cluster_key"] == job["job_clusters"][0]["job_cluster_key"]
                    assert task["libraries"] == [{"whl": "../dist/*.whl"}] and "environment_key" not in task
            if variant == "serverless":
                assert "job_clusters" not in job
                (env,) = job["environments"]
                assert env["spec"]["dependencies"] == ["../dist/*.whl"]  # the bundle's wheel artifact
            else:
                assert "environments" not in job
                assert job["job_clusters"][0]["new_cluster"] == "${var.job_cluster}"


def test_tasks_run_in_order_and_the_monitor_flag_gates_the_rest():
    _, bundle_jobs = bundle()
    for key, (_, job) in bundle_jobs.items():
        previous: dict[str, Any] | None = None
        for task in job["tasks"]:
            expected = [] if previous is None else [{"task_key": previous["task_key"]}]
            if previous is not None and "condition_task" in previous:  # runs only when the flag is set
                expected = [{"task_key": previous["task_key"], "outcome": "true"}]
            assert task.get("depends_on", []) == expected, f"{key}: {task['task_key']}"
            if "condition_task" in task:
                assert task["condition_task"] == {"op": "EQUAL_TO", "right": "true",
                                                  "left": f"{{{{tasks.{previous['task_key']}.values.retrain}}}}"}
            previous = task


@pytest.mark.parametrize("target", [None, *TARGETS])
def test_every_job_is_a_valid_databricks_job(target):
    root, bundle_jobs = bundle()
    for key, (_, job) in bundle_jobs.items():
        spec = job if target is None else resolve(job, variables(root, target), target)
        parsed = typed_job(spec)
        assert parsed.name == job["name"] and len(parsed.tasks) == len(job["tasks"]), key
        if target is not None and "job_clusters" in job:  # the complex variable, resolved, field by field
            assert "-ml-" in parsed.job_clusters[0].new_cluster.spark_version


@pytest.mark.parametrize("where, right, wrong", [
    ("job", "max_concurrent_runs", "max_concurrent_run"), ("task", "environment_key", "enviroment_key"),
    ("task", "python_wheel_task", "python_wheel_tsk"), ("wheel", "entry_point", "entrypoint"),
    ("environment", "dependencies", "dependancies"), ("cluster", "spark_version", "spark_versio"),
])
def test_a_misspelt_field_is_caught(where, right, wrong):
    root, bundle_jobs = bundle()
    key = "monitor_and_retrain" if where == "cluster" else "monitor_and_retrain_serverless"
    job = resolve(copy.deepcopy(bundle_jobs[key][1]), variables(root, "prod"), "prod")
    typed_job(job)  # as written: valid
    node = {"job": lambda: job, "task": lambda: job["tasks"][0],
            "wheel": lambda: job["tasks"][0]["python_wheel_task"],
            "cluster": lambda: job["job_clusters"][0]["new_cluster"],
            "environment": lambda: job["environments"][0]["spec"]}[where]()
    node[wrong] = node.pop(right)
    with pytest.raises(ValueError, match=f"Unexpected field '{wrong}'"):
        typed_job(job)


@pytest.mark.parametrize("target", TARGETS)
def test_both_variants_give_one_valid_configuration_on_each_target(target):
    root, bundle_jobs = bundle()
    assert root["targets"]["dev"].get("default") is True
    assert root["targets"][target]["mode"] == {"dev": "development", "prod": "production"}[target]
    values = variables(root, target)
    cluster = resolve("${var.job_cluster}", values, target)
    assert "-ml-" in cluster["spark_version"], "job-cluster tasks need a Databricks Runtime for ML"
    assert int(cluster["num_workers"]) >= 1 and cluster["node_type_id"]
    env = {k: str(v) for k, v in cluster["spark_env_vars"].items()}
    on_cluster = load_config("databricks.yaml", env=env)
    assert on_cluster.root == env["P300_ROOT"] and on_cluster.serving.backend == "databricks"
    assert on_cluster.spark.master is None
    for table in ("raw_eeg", "ingest_log", "features", "preprocess_log", "predictions"):
        name = env[f"P300__STORAGE__TABLES__{table.upper()}"]
        assert on_cluster.table(table) == (name if target == "prod" else f"{on_cluster.root}/delta/{name}")
    # Unity Catalog on every target: aliases, a three-level model name
    assert on_cluster.registry_uri == "databricks-uc" and on_cluster.registry.model_name.count(".") == 2
    assert on_cluster.registry.experiment.startswith("/") and on_cluster.evaluation.experiment.startswith("/")
    _, job = bundle_jobs["ingest_and_preprocess_serverless"]
    for task in job["tasks"]:  # serverless: no cluster variables, the same settings as options
        params = resolve(task["python_wheel_task"]["parameters"], values, target)
        ns = parse_global_options(params)
        serverless = load_config(ns.conf, root=ns.root, env={}, overrides=ns.overrides)
        assert serverless.dump() == on_cluster.dump()


@pytest.mark.parametrize("key", sorted(bundle()[1]))
def test_task_parameters_parse_with_the_command_line(key):
    _, bundle_jobs = bundle()
    _, spec = bundle_jobs[key]
    for task in [t for t in spec["tasks"] if "python_wheel_task" in t]:
        params = task["python_wheel_task"]["parameters"]
        command = next(c for c in commands.TASK_COMMANDS
                       if commands.COMMAND[c].entry_point == task["python_wheel_task"]["entry_point"])
        for value in commands.TARGETS if "{{job.parameters.target}}" in params else [None]:
            argv = [p.replace("{{job.parameters.target}}", value or "") for p in params]
            globals_, rest = split_global_options(argv)
            args = build_parser().parse_args([*globals_, command, *rest])
            assert args.command == command and args.conf == "databricks.yaml"
            if value:
                assert args.target == value
