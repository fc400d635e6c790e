"""The one command table: p300's commands, its global options, the jobs and their tasks.

Everything that names a command reads it from here: the CLI's subcommands
(``pipeline/arguments.py``), the job runner (``pipeline/job_runner.py``), the wheel's
console scripts (``setup.py`` reads ``console_scripts()``; their functions live in
``pipeline/jobs.py``), the bundle's jobs and the tests that keep the bundle in step.
Standard library only, importing nothing of the project: ``setup.py`` loads it before
anything is installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = [
    "Command", "COMMANDS", "COMMAND", "TASK_COMMANDS", "TARGETS", "Option", "GLOBAL_OPTIONS",
    "Task", "JOBS", "JOB_PARAMETERS", "CONSOLE_SCRIPTS", "console_scripts", "split_global_options",
]


@dataclass(frozen=True)
class Command:
    """A p300 subcommand: the module whose ``main(cfg, args, reporter)`` runs it."""

    name: str
    module: str
    help: str
    task: bool = False  # a job task: console script p300-<name>, a bundle python_wheel_task entry point
    description: str | None = None  # `p300 NAME --help`, when it says more than `help`

    @property
    def entry_point(self) -> str:
        """The console script (and python_wheel_task entry_point) of a task command."""
        if not self.task:
            raise ValueError(f"{self.name} is not a job task")
        return f"p300-{self.name}"

    @property
    def function_name(self) -> str:
        """The console script's function in ``pipeline/jobs.py``."""
        return f"{self.name.replace('-', '_')}_task"

    @property
    def function(self) -> str:
        """The console script's target, ``module:function``, as setup.py declares it."""
        return f"pipeline.jobs:{self.function_name}"


COMMANDS: tuple[Command, ...] = (
    Command("synth", "pipeline.synth", "write realistic synthetic subject files into the landing zone"),
    Command("ingest", "pipeline.ingest", "landing zone -> raw_eeg Delta table, exactly once per file", task=True),
    Command("preprocess", "pipeline.preprocess", "new subjects in raw_eeg -> features, one applyInPandas",
            task=True),
    Command("train", "pipeline.train", "train on the driver, log to MLflow, register, alias challenger", task=True),
    Command("compare", "pipeline.compare",
            "leave-one-subject-out comparison of classifier candidates (MLflow run)",
            description="Fit every candidate (training.candidates) on all subjects but one, score the left-out "
            "one (trialwise and unlabelled-calibration protocols), for every subject; log the per-subject table, "
            "mean and min per-subject ROC AUC and a plot to one MLflow run."),
    Command("deploy", "pipeline.deploy", "serve the challenger beside the champion (idempotent)", task=True),
    Command("evaluate", "pipeline.evaluate", "score served model(s) on subjects they never saw", task=True),
    Command("score", "pipeline.score", "batch-score the features table with mlflow.pyfunc.spark_udf"),
    Command("promote", "pipeline.promote", "challenger becomes champion in registry and endpoint", task=True),
    Command("monitor", "pipeline.monitor", "profile and drift per window of the inference log; the retraining rule",
            task=True, description="Reads the endpoint's inference log, writes monitor_profile and monitor_drift "
            "for the windows not yet processed (idempotent), applies monitoring.rule and records the retrain flag "
            "(docs/monitoring.md)."),
    Command("endpoint", "pipeline.endpoint_cli", "the local serving endpoint",
            description="serve: run the local endpoint server in the foreground (Ctrl-C stops it); status: the "
            "server and its endpoints (on Databricks: the workspace endpoint); stop: stop this root's server by its "
            "recorded pid"),
    Command("job", "pipeline.job_runner", "run one job's tasks in order, as the Databricks bundle does"),
    Command("jvm-cache", "pipeline.jvm_archive",
            "build the local driver JVM's class archive (faster session start)",
            description="Build a class data sharing archive for the local driver JVM: a small ingest and "
            "preprocess in a JVM that dumps the classes it loaded. Local sessions map it from then on (session "
            "start 3.4 -> 1.7 s on 2 cores). Its name follows pyspark's and Delta's jar files: after upgrading or "
            "reinstalling either, run it again."),
    Command("connect", "pipeline.connect_server",
            "a local Spark Connect server with Delta (run jobs with spark.remote)",
            description="serve: start Spark's Connect server with Delta on loopback and print its URL for --set "
            "spark.remote=...; status: say whether this root's server runs; stop: stop it by its recorded pid"),
    Command("demo", "pipeline.demo", "the whole cycle on synthetic data from an empty root, with a summary"),
)
COMMAND: dict[str, Command] = {c.name: c for c in COMMANDS}
TASK_COMMANDS: tuple[str, ...] = tuple(c.name for c in COMMANDS if c.task)

# evaluate's --target, and the job parameter of evaluate_model
TARGETS: tuple[str, ...] = ("champion", "challenger", "both")


@dataclass(frozen=True)
class Option:
    """A global option of p300, accepted before the command and, in a task's parameters, anywhere."""

    flags: tuple[str, ...]
    dest: str
    help: str
    metavar: str | None = None  # None: a switch without a value
    repeat: bool = False


GLOBAL_OPTIONS: tuple[Option, ...] = (
    Option(("--conf",), "conf", "YAML overlay on conf/pipeline.yaml (e.g. conf/databricks.yaml)", "FILE"),
    Option(("--root",), "root", "storage root (default ./lakehouse; env P300_ROOT)", "PATH"),
    Option(("--set",), "overrides", "override one config value, e.g. --set training.cv_folds=3 (repeatable)",
           "KEY=VALUE", repeat=True),
    Option(("-q", "--quiet"), "quiet", "no progress output"),
    Option(("-v", "--verbose"), "verbose",
           "show everything: Spark's and the JVM's startup lines, library logs (spark.quiet=false)"),
)


@dataclass(frozen=True)
class Task:
    """One task of a job: the p300 command it runs and that command's parameters."""

    key: str
    command: str
    params: tuple[str, ...] = ()  # "{name}" stands for the job parameter `name`
    when_flag: str | None = None  # run (with the tasks after it) only when the monitor set this flag

    @property
    def entry_point(self) -> str:
        return COMMAND[self.command].entry_point

    def argv(self, values: Mapping[str, str]) -> list[str]:
        """The task's command line after the command name, job parameters filled in."""
        return [p.format(**values) for p in self.params]


JOBS: dict[str, tuple[Task, ...]] = {
    "ingest_and_preprocess": (Task("ingest", "ingest"), Task("preprocess", "preprocess")),
    "train_and_deploy_challenger": (Task("train", "train"), Task("deploy", "deploy")),
    "evaluate_model": (Task("evaluate", "evaluate", ("--target", "{target}")),),
    "promote_to_champion": (Task("promote", "promote"),),
    # the bundle puts a condition task on the monitor's task value `retrain` before train
    "monitor_and_retrain": (Task("monitor", "monitor"), Task("train", "train", when_flag="retrain"),
                            Task("deploy", "deploy"), Task("evaluate", "evaluate", ("--target", "challenger"))),
}

# job parameters and their defaults (the bundle declares the same as job `parameters`)
JOB_PARAMETERS: dict[str, dict[str, str]] = {
    "ingest_and_preprocess": {},
    "train_and_deploy_challenger": {},
    "evaluate_model": {"target": "challenger"},
    "promote_to_champion": {},
    "monitor_and_retrain": {},
}

# console script -> "module:function"
CONSOLE_SCRIPTS: dict[str, str] = {
    "p300": "pipeline.cli:main",
    **{c.entry_point: c.function for c in COMMANDS if c.task},
    "p300-submit": "pipeline.submit:main",  # any p300 command under spark-submit with Delta
}


def console_scripts() -> list[str]:
    """setup.py's ``entry_points["console_scripts"]``."""
    return [f"{name}={target}" for name, target in CONSOLE_SCRIPTS.items()]


def split_global_options(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate p300's global options (wherever they appear) from the command's own."""
    takes_value = {flag: o.metavar is not None for o in GLOBAL_OPTIONS for flag in o.flags}
    globals_: list[str] = []
    rest: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            rest.extend(tokens[i:])
            break
        option = token.split("=", 1)[0]
        if option in takes_value:
            globals_.append(token)
            if takes_value[option] and "=" not in token and i + 1 < len(tokens):
                globals_.append(tokens[i + 1])
                i += 1
        else:
            rest.append(token)
        i += 1
    return globals_, rest
