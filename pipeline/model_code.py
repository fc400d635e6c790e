"""What a logged model carries: ``code_paths`` no wider than the code it needs to load and predict.

A pickled ``P300Model`` imports ``pipeline.model`` and, through it, the input validator
``pipeline.serving.scoring`` and the classifier pipelines' steps ``pipeline.classifiers``;
nothing else of the package. ``model_code_paths()`` stages
exactly those files (with their packages' ``__init__.py``, so the pickle finds them under
their own names) as a ``pipeline`` tree and returns it for ``log_model(code_paths=...)``.
MLflow's own ``infer_code_paths`` would find them too, but only relative to the working
directory and by loading the model in a subprocess (seconds per model); this is explicit.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["MODEL_MODULES", "model_code_paths"]

MODEL_MODULES = ("pipeline.model", "pipeline.serving.scoring", "pipeline.classifiers")
_SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the directory that holds pipeline/


def _files(modules: tuple[str, ...]) -> list[Path]:
    """Source files (relative to the source root) of ``modules`` and their parent packages."""
    files: set[Path] = set()
    for name in modules:
        parts = name.split(".")
        files.update(Path(*parts[:i], "__init__.py") for i in range(1, len(parts)))
        package = Path(*parts, "__init__.py")
        files.add(package if (_SOURCE_ROOT / package).exists() else Path(*parts[:-1], parts[-1] + ".py"))
    return sorted(files)


def model_code_paths(*extra_modules: str) -> list[str]:
    """``code_paths`` for ``mlflow.pyfunc.log_model``: ``MODEL_MODULES`` plus ``extra_modules``
    (e.g. a module whose classes the fitted estimator pickles), staged once per content in
    the temp directory (content-addressed, so concurrent runs and reruns share it)."""
    files = _files(MODEL_MODULES + tuple(extra_modules))
    digest = hashlib.sha256()
    for rel in files:
        digest.update(str(rel).encode() + b"\0" + (_SOURCE_ROOT / rel).read_bytes())
    stage = Path(tempfile.gettempdir()) / f"p300-model-code-{digest.hexdigest()[:16]}"
    if not stage.exists():
        building = Path(tempfile.mkdtemp(prefix=stage.name + ".", dir=stage.parent))
        for rel in files:
            (building / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_SOURCE_ROOT / rel, building / rel)
        try:
            os.rename(building, stage)
        except OSError:  # another process staged the same content first
            shutil.rmtree(building, ignore_errors=True)
    return [str(stage / "pipeline")]
