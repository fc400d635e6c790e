"""Writes the bundle's job files, resources/<job>.yml and resources/<job>_serverless.yml, from
the command table (pipeline/commands.py: JOBS, JOB_PARAMETERS, the task commands).

    python resources/generate.py           # rewrite the files
    python resources/generate.py --check   # exit 1 when a file is not what the table gives

Two variants of each job:
- job cluster (<job>): every task on one job cluster (${var.job_cluster}, a Databricks
  Runtime for ML) that installs the wheel as a task library; the configuration reaches
  the tasks as the cluster's P300_* environment variables.
- serverless (<job>_serverless): no cluster; an environment with the wheel as a
  dependency, environment_key on every wheel task; serverless compute has no cluster
  environment variables, so the same settings travel as p300's global options
  (--root, --set) in each task's parameters.
tests/test_bundle.py keeps these files equal to what this script writes.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from pipeline.commands import COMMAND, JOB_PARAMETERS, JOBS  # noqa: E402  (the one command table)

PACKAGE = "p300-pipeline"
WHEEL = "../dist/*.whl"  # relative to this folder: the artifact databricks.yml builds
CLUSTER_KEY = "p300_cluster"
ENVIRONMENT_KEY = "p300"
# configuration key -> bundle variable; the job cluster sets them as P300__SECTION__KEY
# variables (databricks.yml, var.job_cluster), serverless tasks as --set KEY=VALUE
SETTINGS: dict[str, str] = {
    "storage.tables.raw_eeg": "raw_eeg_table",
    "storage.tables.ingest_log": "ingest_log_table",
    "storage.tables.features": "features_table",
    "storage.tables.preprocess_log": "preprocess_log_table",
    "storage.tables.predictions": "predictions_table",
    "registry.registry_uri": "registry_uri",
    "registry.model_name": "model_name",
    "registry.experiment": "training_experiment",
    "evaluation.experiment": "evaluation_experiment",
    "serving.endpoint_name": "endpoint_name",
}
NOTES: dict[str, str] = {
    "ingest_and_preprocess": "new files in the landing zone -> raw_eeg -> features.\n"
                             "Both tasks are idempotent: a rerun with nothing new ingests and preprocesses nothing.",
    "train_and_deploy_challenger": "train on the processed subjects, register the version with alias\n"
                                   "challenger, then serve it beside the champion on the serving endpoint.",
    "evaluate_model": "score the served model(s) on holdout subjects they never saw.\n"
                      "Job parameter `target`: challenger (default), champion or both, e.g.\n"
                      "  databricks bundle run evaluate_model --params target=both",
    "promote_to_champion": "the challenger becomes champion in the registry and on the endpoint.",
    "monitor_and_retrain": "profile the endpoint's inference log (monitor_profile, monitor_drift),\n"
                           "apply the retraining rule, and only when it fires (task value `retrain`) train a\n"
                           "challenger, deploy it beside the champion and evaluate it. Scheduled hourly: the\n"
                           "variables schedule_job_cluster and schedule_serverless say which variant runs; the\n"
                           "dev target pauses every schedule (development mode). docs/monitoring.md.",
}
SCHEDULES: dict[str, dict[str, str]] = {"monitor_and_retrain": {"quartz_cron_expression": "0 0 * * * ?",
                                                                "timezone_id": "UTC"}}
VARIANTS = ("job_cluster", "serverless")


def job_key(job: str, variant: str) -> str:
    return job if variant == "job_cluster" else f"{job}_serverless"


def serverless_settings() -> list[str]:
    """p300's global options that carry the bundle's variables to a serverless task."""
    out = ["--root", "${var.root}"]
    for key, variable in SETTINGS.items():
        out += ["--set", f"{key}=${{var.{variable}}}"]
    return out


def _wheel_task(key: str, command: str, argv: list[str], variant: str) -> dict[str, Any]:
    params = ["--conf", "databricks.yaml", *argv]
    task: dict[str, Any] = {"task_key": key}
    wheel = {"package_name": PACKAGE, "entry_point": COMMAND[command].entry_point}
    if variant == "job_cluster":
        task["job_cluster_key"] = CLUSTER_KEY
        task["python_wheel_task"] = {**wheel, "parameters": params}
        task["libraries"] = [{"whl": WHEEL}]
    else:
        task["environment_key"] = ENVIRONMENT_KEY
        task["python_wheel_task"] = {**wheel, "parameters": [*params, *serverless_settings()]}
    return task


def job_definition(job: str, variant: str) -> dict[str, Any]:
    """One job of the bundle, as resources/<key>.yml declares it under resources.jobs."""
    refs = {name: f"{{{{job.parameters.{name}}}}}" for name in JOB_PARAMETERS[job]}
    spec: dict[str, Any] = {"name": f"p300 {job}" + (" (serverless)" if variant == "serverless" else ""),
                            "max_concurrent_runs": 1}
    if JOB_PARAMETERS[job]:
        spec["parameters"] = [{"name": k, "default": v} for k, v in JOB_PARAMETERS[job].items()]
    if job in SCHEDULES:
        spec["schedule"] = {**SCHEDULES[job], "pause_status": f"${{var.schedule_{variant}}}"}
    if variant == "job_cluster":
        spec["job_clusters"] = [{"job_cluster_key": CLUSTER_KEY, "new_cluster": "${var.job_cluster}"}]
    else:
        spec["environments"] = [{"environment_key": ENVIRONMENT_KEY, "spec": {
            "environment_version": "${var.serverless_environment_version}", "dependencies": [WHEEL]}}]
    tasks: list[dict[str, Any]] = []
    previous: str | None = None
    for task in JOBS[job]:
        depends: list[dict[str, str]] = [{"task_key": previous}] if previous else []
        if task.when_flag:  # a condition task on the previous task's value gates this one (and those after it)
            gate = f"{task.when_flag}_flag"
            tasks.append({"task_key": gate, "depends_on": depends, "condition_task": {
                "op": "EQUAL_TO", "left": f"{{{{tasks.{previous}.values.{task.when_flag}}}}}", "right": "true"}})
            depends = [{"task_key": gate, "outcome": "true"}]
        spec_task = _wheel_task(task.key, task.command, task.argv(refs), variant)
        tasks.append({"task_key": task.key, **({"depends_on": depends} if depends else {}),
                      **{k: v for k, v in spec_task.items() if k != "task_key"}})
        previous = task.key
    spec["tasks"] = tasks
    return spec


def render(job: str, variant: str) -> str:
    key = job_key(job, variant)
    what = "on a job cluster" if variant == "job_cluster" else "on serverless compute"
    header = [f"# Job {key}, {what}:", *(f"# {line}" for line in NOTES[job].splitlines()),
              "# Generated by resources/generate.py from pipeline/commands.py; do not edit by hand."]
    body = yaml.dump({"resources": {"jobs": {key: job_definition(job, variant)}}}, Dumper=_Dumper,
                     sort_keys=False, width=110, default_flow_style=False)
    return "\n".join(header) + "\n" + body


class _Dumper(yaml.SafeDumper):
    """Block style, except short lists of strings (parameters, dependencies): one flow list each."""


def _list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    flow = 0 < len(value) <= 4 and all(isinstance(v, str) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(list, _list)


def bundle_files() -> dict[str, str]:
    """File name under resources/ -> its text, for every job and variant."""
    return {f"{job_key(job, variant)}.yml": render(job, variant) for job in JOBS for variant in VARIANTS}


def main(argv: list[str]) -> int:
    stale = []
    for name, text in bundle_files().items():
        path = HERE / name
        if not path.exists() or path.read_text() != text:
            stale.append(name)
            if "--check" not in argv:
                path.write_text(text)
    if "--check" in argv and stale:
        print(f"out of date (run python resources/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    print(("rewrote " if stale else "up to date: ") + (", ".join(stale) if stale else f"{len(bundle_files())} files"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
