"""`p300-submit`: run any p300 command under spark-submit, on local[*] or a cluster.

It builds the spark-submit command line from the same configuration the command
will load: Delta's jars (``--jars`` from the local Maven repository, else
``--packages``), the Spark settings of ``pipeline.spark.spark_conf_pairs``, the Python
interpreter for driver and executors, and ``pipeline/driver.py`` as the application.
Spark then owns the session (master, executors); the p300 command only uses it.

    p300-submit --master 'local[*]' -- --root /data/p300 ingest
    p300-submit --master spark://10.0.0.5:7077 --ship-code -- --root /shared/p300 job ingest_and_preprocess
    p300-submit --print --master spark://10.0.0.5:7077 -- --root /shared/p300 preprocess   # show, don't run

Everything before ``--`` is for spark-submit, everything after it is p300's command line.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlparse

from pipeline.arguments import parse_global_options
from pipeline.commands import split_global_options
from pipeline.config import Config, ConfigError, load_config
from pipeline.driver import CODE_ARCHIVE_PREFIX
from pipeline.spark import spark_conf_pairs
from pipeline.spark_quiet import packaged_conf_dir

__all__ = ["spark_home", "is_loopback_master", "submit_command", "submit_env", "code_archive", "main"]

# set per command line by spark-submit itself, or meaningless off the driver's own host
_NOT_AS_CONF = {"spark.jars", "spark.jars.packages"}
_LOOPBACK_ONLY = {"spark.driver.host", "spark.driver.bindAddress"}


def spark_home() -> Path:
    """The pip-installed pyspark package: it carries bin/spark-submit, bin/spark-class and jars/."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def is_loopback_master(master: str) -> bool:
    """local[...] or a cluster on this machine's loopback address."""
    if master.startswith("local"):
        return True
    hosts = [urlparse(f"spark://{h}").hostname for h in master.split("://", 1)[-1].split(",")]
    return all(h in ("127.0.0.1", "localhost", "::1") for h in hosts)


def code_archive(dest_dir: str | os.PathLike[str] | None = None) -> Path:
    """A zip of the `pipeline` and `udfs` packages (with the packaged conf) for `--py-files`.

    Executors then import the code Spark ships with the application instead of whatever
    is installed on their hosts; third-party packages must still be installed there.
    """
    import pipeline
    import udfs

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        def add(name: str, data: bytes) -> None:  # a fixed time stamp: the same code, the same bytes
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)

        for package in (pipeline, udfs):
            base = Path(package.__file__).resolve().parent
            for path in sorted(base.rglob("*.py")):
                if "__pycache__" not in path.parts:
                    add(f"{package.__name__}/{path.relative_to(base).as_posix()}", path.read_bytes())
        conf = packaged_conf_dir()
        add("pipeline/conf/__init__.py", b"")
        for item in sorted(conf.iterdir()) if conf else []:
            if item.name.endswith((".yaml", ".properties")):
                add(f"pipeline/conf/{item.name}", item.read_bytes())
    data = buf.getvalue()
    dest = Path(dest_dir or tempfile.gettempdir())
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{CODE_ARCHIVE_PREFIX}{hashlib.sha256(data).hexdigest()[:12]}.zip"
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return target


def submit_command(cfg: Config, p300_args: Sequence[str], master: str = "local[*]", *,
                   spark_conf: Mapping[str, str] | None = None, py_files: Sequence[str] = (),
                   python: str | None = None, app_name: str | None = None,
                   app: str | None = None) -> list[str]:
    """The spark-submit argv that runs `p300 <p300_args>` with Delta on `master` (client mode).

    `app` replaces pipeline/driver.py by another Python application (its arguments: `p300_args`).
    """
    from pipeline.spark import delta_artifact, delta_jar_paths

    python = python or sys.executable
    conf = {k: v for k, v in spark_conf_pairs(cfg).items() if k not in _NOT_AS_CONF}
    if not is_loopback_master(master):
        conf = {k: v for k, v in conf.items() if k not in _LOOPBACK_ONLY}
    conf["spark.pyspark.python"] = python
    conf["spark.pyspark.driver.python"] = python
    conf.update(spark_conf or {})
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", master,
           "--name", app_name or f"{cfg.spark.app_name}: {' '.join(_command_words(p300_args))}"]
    jars = delta_jar_paths(cfg)
    cmd += ["--jars", ",".join(jars)] if jars else ["--packages", delta_artifact(cfg)]
    if py_files:
        cmd += ["--py-files", ",".join(py_files)]
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd.append(app or str(Path(__file__).resolve().parent / "driver.py"))
    return cmd + list(p300_args)


def _command_words(p300_args: Sequence[str]) -> list[str]:
    _, rest = split_global_options(p300_args)
    return rest[:2] or ["p300"]


def submit_env(master: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """spark-submit's environment: SPARK_HOME of the pip package; loopback addresses for a local run."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("SPARK_HOME", str(spark_home()))
    if is_loopback_master(master):
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="p300-submit",
        usage="p300-submit [--master URL] [options] -- [p300 global options] COMMAND [ARGS]",
        description="Run a p300 command under spark-submit with Delta: on local[*] or a Spark cluster. "
                    "Everything after `--` is p300's own command line.",
        epilog="Example: p300-submit --master spark://127.0.0.1:7077 -- --root /shared/p300 "
               "job ingest_and_preprocess",
    )
    p.add_argument("--master", default="local[*]", help="Spark master URL (default local[*])")
    p.add_argument("--spark-conf", metavar="KEY=VALUE", action="append", default=[],
                   help="extra spark-submit --conf (repeatable), e.g. spark.executor.memory=2g")
    p.add_argument("--ship-code", action="store_true",
                   help="send this package to the executors with --py-files (hosts need only the dependencies)")
    p.add_argument("--py-files", metavar="FILES", default=None, help="comma-separated --py-files to pass on")
    p.add_argument("--python", metavar="PATH", default=None,
                   help="interpreter for driver and executors (default: this one; must exist on every host)")
    p.add_argument("--print", dest="print_only", action="store_true", help="print the command, do not run it")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if "--" not in argv:
        if any(a in ("-h", "--help") for a in argv):
            parser.print_help()
            return 0
        parser.error("put p300's command line after `--`, e.g. p300-submit -- --root /data ingest")
    cut = argv.index("--")
    opts = parser.parse_args(argv[:cut])
    p300_args = argv[cut + 1:]
    if not p300_args:
        parser.error("no p300 command after `--`")
    ns = parse_global_options(p300_args)
    extra: dict[str, str] = {}
    for item in opts.spark_conf:
        if "=" not in item:
            parser.error(f"--spark-conf {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        extra[key] = value
    try:
        cfg = load_config(ns.conf, root=ns.root, env=os.environ, overrides=ns.overrides)
        py_files = [p for p in (opts.py_files or "").split(",") if p]
        if opts.ship_code:
            py_files.append(str(code_archive()))
        cmd = submit_command(cfg, p300_args, opts.master, spark_conf=extra, py_files=py_files,
                             python=opts.python)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"p300-submit: {exc}", file=sys.stderr)
        return 2
    print(shlex.join(cmd), file=sys.stdout if opts.print_only else sys.stderr, flush=True)
    if opts.print_only:
        return 0
    proc = subprocess.Popen(cmd, env=submit_env(opts.master))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        return 130


if __name__ == "__main__":
    sys.exit(main())
