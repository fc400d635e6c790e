"""The one input validator (pipeline/serving/scoring.py), and the code a logged model carries.

The endpoint server and the logged pyfunc model both validate through ``as_matrix``: the
same input gets the same verdict and message from each."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.model import P300Model, build_estimator, model_signature
from pipeline.model_code import model_code_paths
from pipeline.serving.scoring import InputError, as_matrix, parse_inputs, parse_params, rows_of

N = 4


@pytest.fixture(scope="module")
def model() -> P300Model:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, N)).astype(np.float32)
    y = np.where(np.arange(40) % 3 == 0, 2, 1)
    return P300Model(build_estimator().fit(X, y), N)


GOOD = {
    "rows": [[0.1] * N, [0.2] * N],
    "array": np.ones((2, N), dtype=np.float64),
    "one array cell per row": [[[0.1] * N], [[0.2] * N]],
    "one epoch, unbatched": [0.1] * N,
    "frame of columns": pd.DataFrame(np.ones((2, N)), columns=[f"f{i}" for i in range(N)]),
    "frame of one array column": pd.DataFrame({"features": [np.ones(N, np.float32), np.zeros(N, np.float32)]}),
}

BAD = {
    "wrong width": ([[0.1] * (N - 1)], f"expected {N} features per epoch, got {N - 1}"),
    "strings": ([["a"] * N], "must be numbers (found strings"),
    "nulls": ([[None] * N], "must be numbers (found null"),
    "booleans": ([[True] * N], "must be numbers (found booleans"),
    "ragged": ([[0.1] * N, [0.1] * (N - 1)], "same length"),
    "empty": ([], "empty batch"),
    "NaN": ([[0.1] * (N - 1) + [float("nan")]], "NaN or infinite value (or beyond float32) in row 0"),
    "beyond float32": ([[0.0] * N, [1e300] * N], "in row 1"),
    "3-d": (np.zeros((2, 2, N)), "expected a batch of shape"),
    "not rows": ("1,2,3", "must be a list of rows"),
    "ragged array cells": (pd.DataFrame({"features": [np.ones(N), np.ones(N - 1)]}), "same length"),
}


@pytest.mark.parametrize("what", list(GOOD))
def test_accepted_inputs_become_one_float32_matrix(model, what):
    matrix = as_matrix(GOOD[what], N)
    assert matrix.dtype == np.float32 and matrix.flags.c_contiguous and matrix.shape[1] == N
    out = model.predict(None, GOOD[what])
    assert list(out.columns) == ["probability", "label"] and len(out) == len(matrix)


@pytest.mark.parametrize("what", list(BAD))
def test_the_model_and_the_validator_refuse_alike(model, what):
    data, fragment = BAD[what]
    with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as direct:
        as_matrix(data, N)
    with pytest.raises(ValueError) as through_model:
        model.predict(None, data)
    assert str(through_model.value) == str(direct.value)


def test_body_formats_and_params():
    assert parse_inputs({"inputs": {"features": [[1]]}}) == ("inputs", [[1]])
    fmt, data = parse_inputs({"dataframe_records": [{"a": 1, "b": 2}], "params": {"subject_id": 7}})
    assert rows_of(fmt, data) == [[1, 2]]
    assert parse_params({"inputs": [], "params": {"subject_id": 7}}) == {"subject_id": 7}
    assert parse_params({"inputs": []}) is None
    with pytest.raises(InputError, match="params must be a JSON object"):
        parse_params({"params": [7]})
    with pytest.raises(InputError, match="one of 'inputs'"):
        parse_inputs({"data": []})
    with pytest.raises(InputError, match=r"dataframe_records\[1\]"):
        rows_of("dataframe_records", [{"a": 1}, {"b": 1}])


@pytest.mark.slow  # logs and reloads a real MLflow model
def test_a_logged_model_carries_only_its_module_and_the_validator(model, tmp_path):
    """Saved with ``model_code_paths()``, the model directory holds five files of this
    package; a fresh interpreter that cannot import the project loads and runs it."""
    import mlflow

    path = tmp_path / "model"
    mlflow.pyfunc.save_model(path, python_model=model, code_paths=model_code_paths(),
                             signature=model_signature(N), input_example=np.zeros((1, N), np.float32),
                             pip_requirements=["mlflow"])
    carried = sorted(str(p.relative_to(path / "code")) for p in (path / "code").rglob("*.py"))
    assert carried == ["pipeline/__init__.py", "pipeline/classifiers.py", "pipeline/model.py", "pipeline/serving/__init__.py",
                       "pipeline/serving/scoring.py"]
    script = textwrap.dedent(f"""
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
        sys.path[:] = [p for p in sys.path if p and p.rstrip("/") != {str(Path(__file__).resolve().parent.parent)!r}]
        try:
            import pipeline
            raise SystemExit("the project is importable: the check proves nothing")
        except ImportError:
            pass
        import numpy as np, mlflow.pyfunc
        out = mlflow.pyfunc.load_model({str(path)!r}).predict(np.zeros((3, {N}), np.float32))
        import pipeline.model
        assert pipeline.model.__file__.startswith({str(path)!r}), pipeline.model.__file__
        try:
            mlflow.pyfunc.load_model({str(path)!r}).predict(np.zeros((1, {N - 1}), np.float32))
        except Exception as exc:
            print("refused:", exc)
        print(len(out), sorted(out.columns))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"expected {N} features per epoch" in done.stdout or "shape" in done.stdout
    assert "3 ['label', 'probability']" in done.stdout
