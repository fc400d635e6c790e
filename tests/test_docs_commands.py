"""The commands in README.md and docs/*.md stay true to the code.

Every fenced shell block (bash, sh, shell, console) and every `$ ` transcript line is split
into commands, and each command is checked against what it calls:

- cheap ones run through the installed console scripts (`p300 ... --help`, `p300-submit
  --print ...`, and transcripts whose shown output is a refusal before any work, which must
  still print what the docs show);
- expensive ones (the demo, jobs, spark-submit, the bundle, benchmarks, pytest) are checked
  for existence only: the `p300` subcommand is one that `p300 --help` lists, every flag used
  appears in that subcommand's help, bundle targets and jobs exist, benchmark flags exist in
  the script, pytest markers are declared.

A program the test does not know fails it, so a new kind of command in the docs needs a
check here. Inline `p300 ...` spans in the prose are checked the same way (existence only).
Finally, the docs' links and repository paths must exist, and no tracked file cites a
design document or issue number that the repository does not hold. No Spark.
"""
from __future__ import annotations

import configparser
import functools
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from config_factory import user_env
from pipeline.commands import COMMANDS

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
GLOBAL_WITH_VALUE = {"--conf", "--root", "--set"}
TASK_SCRIPTS = {c.entry_point for c in COMMANDS if c.task}  # p300-ingest, ... (the command table's)


# --- reading the docs ------------------------------------------------------------------------

def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of every fenced block."""
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip().lower(), []
            else:
                blocks.append((lang, lines))
                lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def _joined(lines: list[str]) -> list[str]:
    out, buf = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
        else:
            out.append(buf + line)
            buf = ""
    return out + ([buf] if buf else [])


def split_commands(line: str) -> list[list[str]]:
    """Shell words of each simple command on a line (comments dropped; split at ; && || |)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    commands, current = [], []
    for tok in lex:
        if tok and set(tok) <= set(";&|"):
            commands.append(current)
            current = []
        else:
            current.append(tok)
    commands.append(current)
    return [c for c in commands if c]


def doc_commands() -> list[tuple[str, list[str], list[str] | None]]:
    """(where, words, expected output lines or None) of every command shown in the docs."""
    found = []
    for path in DOCS:
        name = path.relative_to(REPO).as_posix()
        for lang, lines in fenced_blocks(path.read_text()):
            if lang in SHELL_LANGS:
                for line in _joined(lines):
                    for words in split_commands(line):
                        found.append((name, words, None))
            else:  # `$ command` transcripts, with the output the docs show under them
                for i, line in enumerate(lines):
                    if line.startswith("$ "):
                        rest = lines[i + 1:]
                        end = next((j for j, x in enumerate(rest) if x.startswith("$ ")), len(rest))
                        for words in split_commands(line[2:]):
                            found.append((name, words, [x for x in rest[:end] if x.strip()]))
    return found


def inline_p300_spans() -> list[tuple[str, list[str]]]:
    spans = []
    for path in DOCS:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for code in re.findall(r"`([^`\n]+)`", text):
            if re.match(r"\./dev \w|p300(-\w+)? \S", code):
                try:
                    spans.append((path.relative_to(REPO).as_posix(), shlex.split(code)))
                except ValueError:
                    pass
    return spans


# --- what the code offers ----------------------------------------------------------------------

def console_script(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"console script {name} is not installed next to {sys.executable} nor on PATH")
    return found


@functools.lru_cache(maxsize=None)
def run_script(words: tuple[str, ...], workdir: str) -> subprocess.CompletedProcess:
    # as a user's shell (user_env); anything a command writes lands in its own workdir
    env = user_env()
    return subprocess.run([console_script(words[0]), *words[1:]], capture_output=True, text=True, cwd=workdir,
                          env=env, timeout=120)


@functools.lru_cache(maxsize=None)
def subcommands() -> tuple[str, ...]:
    """The subcommands `p300 --help` lists (the installed console script, as users call it)."""
    out = subprocess.run([console_script("p300"), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    listing = out.stdout.split("positional arguments:", 1)[1].split("options:", 1)[0]
    names = tuple(m.group(1) for m in re.finditer(r"^ {4}([a-z][\w-]*)(?: {2,}|$)", listing, re.M))
    assert {"synth", "ingest", "demo"} <= set(names), out.stdout
    return names


def _help(*words: str) -> str:
    out = subprocess.run([console_script(words[0]), *words[1:], "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, f"{shlex.join(words)} --help exited {out.returncode}: {out.stderr}"
    return out.stdout


@functools.lru_cache(maxsize=None)
def all_help() -> dict[str | None, str]:
    """`p300 --help` and `p300 COMMAND --help` of every subcommand, from the installed console
    script (in parallel: each is a short interpreter start)."""
    names = subcommands()
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(lambda c: _help("p300", c), names))
    return {None: _help("p300"), **dict(zip(names, texts))}


def help_text(command: str | None) -> str:
    return all_help()[command]


@functools.lru_cache(maxsize=None)
def submit_help() -> str:
    return _help("p300-submit")


def flags_of(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if re.match(r"--?[a-zA-Z]", w)]


def bundle() -> tuple[set[str], dict[str, set[str]]]:
    targets = set(yaml.safe_load((REPO / "databricks.yml").read_text())["targets"])
    jobs: dict[str, set[str]] = {}
    for f in (REPO / "resources").glob("*.yml"):
        for name, job in (yaml.safe_load(f.read_text()).get("resources", {}).get("jobs") or {}).items():
            jobs[name] = {p["name"] for p in job.get("parameters", [])}
    return targets, jobs


def pytest_markers() -> set[str]:
    ini = configparser.ConfigParser()
    ini.read(REPO / "pytest.ini")
    return {line.split(":", 1)[0].strip() for line in ini["pytest"]["markers"].splitlines() if line.strip()}


# --- the checks per program --------------------------------------------------------------------

def check_p300(words: list[str], where: str) -> None:
    """words: p300's command line after the program name."""
    i, command = 0, None
    while i < len(words):
        w = words[i]
        if w.split("=", 1)[0] in GLOBAL_WITH_VALUE:
            i += 1 if "=" in w else 2
        elif w.startswith("-"):
            i += 1
        else:
            command = w
            break
    for flag in flags_of(words[:i]):
        assert flag in help_text(None) or flag == "--help", f"{where}: p300 has no global option {flag}"
    if command is None or command.isupper() or command in ("...", ".."):
        return  # `p300 --help`, or a placeholder such as COMMAND
    assert command in subcommands(), f"{where}: `p300 {command}` is not a subcommand ({', '.join(subcommands())})"
    for flag in flags_of(words[i + 1:]):
        if flag in GLOBAL_WITH_VALUE or flag in ("-q", "--quiet"):  # global options may follow the command
            continue
        assert flag in help_text(command), f"{where}: `p300 {command}` has no option {flag}"


def check_submit(words: list[str], where: str) -> None:
    mine, p300 = (words[:words.index("--")], words[words.index("--") + 1:]) if "--" in words else (words, [])
    for flag in flags_of(mine):
        assert flag in submit_help(), f"{where}: p300-submit has no option {flag}"
    if p300:
        check_p300(p300, where)


def check_dev(words: list[str], where: str) -> None:
    assert words and words[0] in ("setup", "test", "demo", "p300"), f"{where}: ./dev has no command {words[:1]}"
    if words[0] == "p300":
        check_p300(words[1:], where)
    elif words[0] == "demo":
        check_p300(["demo", *words[1:]], where)
    elif words[0] == "test":
        check_pytest(words[1:], where)


def check_pytest(words: list[str], where: str) -> None:
    for i, w in enumerate(words):
        if w == "-m":
            used = set(re.findall(r"[a-z_]+", words[i + 1])) - {"not", "and", "or"}
            assert used <= pytest_markers(), f"{where}: undeclared pytest markers {used - pytest_markers()}"
        elif w.startswith("--") and w not in ("--all-points",):
            pass  # pytest's own options
        elif w == "--all-points":
            assert "--all-points" in (REPO / "tests" / "conftest.py").read_text()
        elif w.startswith("tests/"):
            assert (REPO / w.split("::")[0]).exists(), f"{where}: {w} does not exist"


def check_databricks(words: list[str], where: str) -> None:
    targets, jobs = bundle()
    if words[:2] == ["fs", "cp"]:
        return
    assert words[0] == "bundle" and words[1] in ("validate", "deploy", "run"), f"{where}: databricks {words[:2]}"
    rest = words[2:]
    if "-t" in rest:
        assert rest[rest.index("-t") + 1] in targets, f"{where}: no bundle target {rest[rest.index('-t') + 1]}"
    if words[1] == "run":
        job = next(w for i, w in enumerate(rest) if not w.startswith("-") and (i == 0 or rest[i - 1] != "-t"))
        assert job in jobs, f"{where}: no bundle job {job} ({', '.join(sorted(jobs))})"
        if "--params" in rest:
            name = rest[rest.index("--params") + 1].split("=", 1)[0]
            assert name in jobs[job], f"{where}: job {job} has no parameter {name}"


def check_benchmark(words: list[str], where: str) -> None:
    script = REPO / words[0]
    assert script.exists(), f"{where}: {words[0]} does not exist"
    source = script.read_text()
    for flag in flags_of(words[1:]):
        assert f'"{flag}"' in source, f"{where}: {words[0]} has no option {flag}"


def check_command(where: str, words: list[str]) -> None:
    prog, args = words[0], words[1:]
    name = Path(prog).name
    if name == "p300":
        check_p300(args, where)
    elif name == "p300-submit":
        check_submit(args, where)
    elif name in TASK_SCRIPTS:  # p300-evaluate ARGS is p300 evaluate ARGS
        check_p300([name.removeprefix("p300-"), *args], where)
    elif prog == "./dev":
        check_dev(args, where)
    elif name == "databricks":
        check_databricks(args, where)
    elif name in ("python", "python3") and args[:1] and args[0].startswith("benchmarks/"):
        check_benchmark(args, where)
    elif name == "pytest" or (name in ("python", "python3") and args[:2] == ["-m", "pytest"]):
        check_pytest(args[2:] if args[:1] == ["-m"] else args, where)
    else:
        pytest.fail(f"{where}: the docs show `{shlex.join(words)}`, which this test cannot check; add a check")


def is_cheap(words: list[str], expected: list[str] | None) -> bool:
    name = Path(words[0]).name
    if name == "p300" and ("--help" in words or "-h" in words):
        return True
    if name == "p300-submit" and "--print" in words:
        return True
    # a transcript whose output is a refusal before any work (configuration or usage)
    return name == "p300" and bool(expected) and expected[0].startswith(("p300: ", "usage: p300"))


# --- the tests ---------------------------------------------------------------------------------

COMMANDS = doc_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 10
    assert {w for _, words, _ in COMMANDS for w in words[:1]} >= {"./dev", "p300", "databricks"}


@pytest.mark.slow  # each help text is an interpreter start of the console script
@pytest.mark.parametrize("where, words, expected", COMMANDS,
                         ids=[f"{w}: {shlex.join(c)[:60]}" for w, c, _ in COMMANDS])
def test_doc_command(where, words, expected, tmp_path_factory):
    check_command(where, words)
    if not is_cheap(words, expected):
        return
    workdir = str(tmp_path_factory.mktemp("docs-command"))
    out = run_script(tuple(words), workdir)
    shown = out.stdout + out.stderr
    if expected:
        for line in expected:
            assert line.strip() in shown, f"{where}: `{shlex.join(words)}` no longer prints {line.strip()!r}:\n{shown}"
    else:
        assert out.returncode == 0, f"{where}: `{shlex.join(words)}` exited {out.returncode}:\n{shown}"


@pytest.mark.slow
def test_inline_p300_mentions_exist():
    spans = inline_p300_spans()
    assert spans
    for where, words in spans:
        if words[0] == "./dev":
            check_dev(words[1:], where)
        else:
            check_command(where, words)


@pytest.mark.slow
def test_readme_synopsis_lists_every_subcommand_with_real_options():
    text = (REPO / "README.md").read_text()
    synopsis = next(lines for lang, lines in fenced_blocks(text) if lines and lines[0].startswith("p300 ["))
    listed = {}
    for line in synopsis[1:]:
        command, *rest = line.split()
        listed[command] = rest
    assert set(listed) == set(subcommands()), "README's command line synopsis differs from `p300 --help`"
    for command, rest in listed.items():
        for flag in flags_of(rest):
            assert flag in help_text(command), f"README synopsis: `p300 {command}` has no option {flag}"
    for flag in flags_of(synopsis[0].split()):
        assert flag in help_text(None), f"README synopsis: p300 has no global option {flag}"


def test_docs_link_and_name_only_files_that_exist():
    missing = []
    for path in DOCS:
        text = path.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if "://" not in target and not (path.parent / target).exists():
                missing.append(f"{path.name}: link {target}")
        for code in re.findall(r"`([^`\s]+)`", text):
            if re.fullmatch(r"(pipeline|udfs|conf|tests|benchmarks|docs|resources|\.ci)/[\w./-]+", code) \
                    and not (REPO / code.rstrip("/")).exists():
                missing.append(f"{path.name}: {code}")
    assert not missing, "the docs name files that are not in the repository:\n" + "\n".join(missing)


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    skip = {Path(__file__).resolve()}
    return [REPO / f for f in out.splitlines()
            if f.endswith((".py", ".md", ".yml", ".yaml", ".txt", ".ini", ".in", ".properties")) or "/" not in f
            if (REPO / f).is_file() and (REPO / f).resolve() not in skip]


def test_no_file_cites_documents_or_issues_that_are_not_in_the_repository():
    pattern = re.compile(r"DESIGN" r"\.md|\b[Ii]ssue \d+\b|\([Ii]ssue\b|the issue'?s?\b")
    hits = []
    for f in _tracked_text_files():
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{f.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert not hits, "cites something the repository does not hold:\n" + "\n".join(hits)


def test_readme_stays_a_guide():
    """The README is what a newcomer reads first: at most 250 lines; the rest belongs in docs/."""
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move detail into docs/"
