"""The Databricks bundle as `databricks bundle validate` reads it: databricks.yml, the job files
it includes, and variables resolved per target (importable by test modules)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
BUNDLE_USER = "someone@example.com"


def bundle() -> tuple[dict[str, Any], dict[str, tuple[Path, dict[str, Any]]]]:
    """databricks.yml, and every job of the files it includes: key -> (file, job)."""
    root = yaml.safe_load((REPO / "databricks.yml").read_text())
    jobs_by_key: dict[str, tuple[Path, dict[str, Any]]] = {}
    for pattern in root["include"]:
        for path in sorted(REPO.glob(pattern)):
            doc = yaml.safe_load(path.read_text()) or {}
            for key, job in doc.get("resources", {}).get("jobs", {}).items():
                assert key not in jobs_by_key, f"job {key} defined twice ({path.name})"
                jobs_by_key[key] = (path, job)
    return root, jobs_by_key


def resolve(value: Any, variables: dict[str, Any], target: str) -> Any:
    """Substitute ${var.*}, ${bundle.*} and ${workspace.current_user.userName} as `bundle validate` would."""
    if isinstance(value, dict):
        return {k: resolve(v, variables, target) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, variables, target) for v in value]
    if not isinstance(value, str):
        return value
    whole = re.fullmatch(r"\$\{var\.(\w+)\}", value)
    if whole:  # a whole-value reference keeps the variable's type (complex variables)
        return resolve(variables[whole.group(1)], variables, target)

    def one(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref.startswith("var."):
            return str(resolve(variables[ref[4:]], variables, target))
        known = {"bundle.target": target, "bundle.name": "p300-pipeline",
                 "workspace.current_user.userName": BUNDLE_USER}
        assert ref in known, f"unexpected reference ${{{ref}}}"
        return known[ref]

    return re.sub(r"\$\{([\w.]+)\}", one, value)


def variables(root: dict[str, Any], target: str) -> dict[str, Any]:
    """The target's variable values: the defaults, then the target's own."""
    values = {name: spec["default"] for name, spec in root["variables"].items()}
    values.update(root["targets"][target].get("variables", {}))
    return values
