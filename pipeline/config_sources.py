"""Where the configuration's layers come from, and how a bad one is reported: the packaged
conf files, YAML overlays, dotted ``--set`` keys and pydantic's errors as one message per
key. ``pipeline/config.py`` stacks the layers into its one ``Config``."""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

__all__ = ["ConfigError", "default_conf_text", "deep_merge", "set_dotted", "read_yaml", "format_errors"]


class ConfigError(ValueError):
    """A configuration problem, with the offending key in the message."""


def default_conf_text(name: str = "pipeline.yaml") -> str:
    """Text of a packaged conf file: from the wheel (pipeline.conf) or the repository."""
    try:
        return resources.files("pipeline.conf").joinpath(name).read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        repo_conf = Path(__file__).resolve().parent.parent / "conf" / name
        if repo_conf.exists():
            return repo_conf.read_text()
        raise ConfigError(f"packaged configuration {name!r} not found")


def deep_merge(base: dict[str, Any], over: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(tree: dict[str, Any], dotted: str, raw: str) -> None:
    keys = [k for k in dotted.split(".") if k]
    if not keys:
        raise ConfigError(f"empty override key in {dotted!r}")
    node = tree
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {k!r} is not a section")
        node = nxt
    node[keys[-1]] = yaml.safe_load(raw) if raw != "" else None


# libyaml's parser where PyYAML has it (the same safe constructor, ten times faster: the
# configuration is read by every command, job task and test)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER) or {}  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    return data


def format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against conf/pipeline.yaml)"
        lines.append(f"  {key}: {msg} (got {err.get('input')!r})" if err["type"] != "extra_forbidden" else f"  {key}: {msg}")
    return f"invalid configuration ({source}):\n" + "\n".join(lines)
