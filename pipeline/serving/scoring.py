"""The one input validator: request bodies and model inputs as a float32 epoch matrix.

Both the local endpoint server (on the JSON it receives) and the logged pyfunc model
(``P300Model.predict``, whatever MLflow, Databricks Model Serving or ``spark_udf`` hand
it) call :func:`as_matrix`, so a batch is accepted or refused by the same rules and with
the same message everywhere. This module imports only numpy (pandas where a DataFrame
arrives): it travels inside every logged model (``pipeline.model.model_code_paths``).

Accepted bodies (Databricks' serving formats): ``inputs`` / ``instances`` (rows of
numbers, or one named tensor), ``dataframe_split`` and ``dataframe_records``, each
optionally with ``params`` (a JSON object handed to the model's ``predict(..., params=)``)
and ``client_request_id``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["InputError", "FORMATS", "as_matrix", "parse_inputs", "parse_params", "client_request_id", "rows_of", "generic_input",
           "predictions_body", "json_default"]

FORMATS = ("inputs", "instances", "dataframe_split", "dataframe_records")


class InputError(ValueError):
    """The caller's input is wrong; the message says what and where (the server answers 400)."""


def _numeric(rows: Any, what: str) -> np.ndarray:
    """Rows of numbers as an array; strings, nulls, booleans and ragged rows refused."""
    try:
        arr = np.asarray(rows)
    except (ValueError, TypeError) as exc:  # ragged nesting
        raise InputError(f"{what}: rows must all have the same length ({exc})") from None
    if arr.dtype.kind not in "fiu":
        if arr.dtype == object:
            found = "null, an object, a nested list or a ragged row"
        else:
            kind = {"U": "strings", "S": "strings", "b": "booleans"}.get(arr.dtype.kind, arr.dtype.name)
            found = f"{kind}, e.g. {arr.flat[0]!r}" if arr.size else kind
        raise InputError(f"{what}: values must be numbers (found {found})")
    return arr


def _frame_values(frame: Any, what: str) -> Any:
    """A DataFrame's rows: one column of per-epoch arrays (``features``), or one column per feature."""
    if frame.shape[1] == 1 and frame.dtypes.iloc[0] == object:
        cells = frame.iloc[:, 0].tolist()
        if cells and all(isinstance(c, np.ndarray) for c in cells):  # spark_udf / Arrow: no list round trip
            try:
                return np.stack(cells)
            except ValueError as exc:
                raise InputError(f"{what}: rows must all have the same length ({exc})") from None
        return [[c] for c in cells]  # one array cell per row
    return frame.to_numpy()


def _rows(data: Any, what: str) -> np.ndarray:
    """A batch of JSON rows as an array: each row a list of numbers, or one array cell."""
    if isinstance(data, np.ndarray):
        return data if data.dtype.kind in "fiu" else _numeric(data, what)
    if not isinstance(data, list):
        raise InputError(f"{what} must be a list of rows, got {type(data).__name__}")
    if not data:
        raise InputError(f"{what}: empty batch (no rows)")
    first = data[0]
    if isinstance(first, list) and len(first) == 1 and isinstance(first[0], list):
        try:
            data = [r[0] for r in data]
        except (TypeError, IndexError, KeyError):
            raise InputError(f"{what}: every row must hold one array of features") from None
    return _numeric(data, what)


def as_matrix(data: Any, n_features: int | None, what: str = "inputs") -> np.ndarray:
    """A validated C-contiguous float32 (n, n_features) matrix from rows, an array or a DataFrame.

    Rows may each hold one array (an ``features`` array column); one unbatched epoch of
    ``n_features`` values is a batch of one. Raises :class:`InputError` naming the problem."""
    if hasattr(data, "iloc") and hasattr(data, "dtypes"):  # a pandas DataFrame (pandas not imported here)
        data = _frame_values(data, what)
    arr = _rows(data, what)
    if arr.ndim == 1 and n_features and arr.size == n_features:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{what}: expected a batch of shape (n, {n_features or 'features'}), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{what}: empty batch (no rows)")
    if n_features is not None and arr.shape[1] != n_features:
        raise InputError(f"{what}: expected {n_features} features per epoch, got {arr.shape[1]}")
    with np.errstate(over="ignore"):
        matrix = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(matrix).all():
        row = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise InputError(f"{what}: NaN or infinite value (or beyond float32) in row {row}")
    return matrix


def parse_inputs(payload: Any) -> tuple[str, Any]:
    """(format, data) of an invocation body."""
    if not isinstance(payload, dict):
        raise InputError(f"the body must be a JSON object, got {type(payload).__name__}")
    for key in ("inputs", "instances"):
        if key in payload:
            data = payload[key]
            if isinstance(data, dict):  # named tensors: one accepted
                if len(data) != 1:
                    raise InputError(f"{key}: expected one tensor, got {sorted(data)}")
                data = next(iter(data.values()))
            return key, data
    if "dataframe_split" in payload:
        split = payload["dataframe_split"]
        if not isinstance(split, dict) or "data" not in split:
            raise InputError("dataframe_split must be an object with 'data' (and 'columns')")
        return "dataframe_split", split
    if "dataframe_records" in payload:
        return "dataframe_records", payload["dataframe_records"]
    raise InputError(f"the body must have one of {', '.join(repr(f) for f in FORMATS)}; "
                     f"got keys {sorted(payload)[:10]}")


def parse_params(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The body's optional ``params`` object (None when absent)."""
    params = payload.get("params")
    if params is not None and not isinstance(params, dict):
        raise InputError(f"params must be a JSON object, got {type(params).__name__}")
    return params


def _records_rows(records: Any) -> tuple[list[str], list[list[Any]]]:
    if not isinstance(records, list) or (records and not isinstance(records[0], dict)):
        raise InputError("dataframe_records must be a list of objects")
    if not records:
        raise InputError("dataframe_records: empty batch (no records)")
    columns = list(records[0])
    try:
        return columns, [[r[c] for c in columns] for r in records]
    except (KeyError, TypeError):
        bad = next(i for i, r in enumerate(records) if not isinstance(r, dict) or any(c not in r for c in columns))
        raise InputError(f"dataframe_records[{bad}] is not an object with the columns of record 0") from None


def rows_of(fmt: str, data: Any) -> Any:
    """The rows of a parsed body, whatever its format (for :func:`as_matrix`)."""
    if fmt == "dataframe_split":
        return data["data"]
    if fmt == "dataframe_records":
        return _records_rows(data)[1]
    return data


def generic_input(fmt: str, data: Any) -> Any:
    """Model input for ``pyfunc.predict`` (models without a matrix fast path): ndarray or DataFrame."""
    import pandas as pd

    if fmt in ("inputs", "instances"):
        return _rows(data, fmt) if isinstance(data, list) else data
    if fmt == "dataframe_split":
        rows = data["data"]
        if not isinstance(rows, list) or not rows:
            raise InputError("dataframe_split: empty batch (no rows)")
        try:
            return pd.DataFrame(rows, columns=data.get("columns"))
        except (ValueError, TypeError) as exc:
            raise InputError(f"dataframe_split: {exc}") from None
    columns, rows = _records_rows(data)
    return pd.DataFrame(rows, columns=columns)


def predictions_body(output: Any) -> list[Any]:
    """MLflow's response shape: DataFrame -> records, arrays and series -> lists."""
    if hasattr(output, "to_dict") and hasattr(output, "columns"):
        return output.to_dict(orient="records")
    if hasattr(output, "tolist"):
        return output.tolist()
    return output


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def client_request_id(payload: Any) -> str | None:
    """A request's client_request_id: top level (Databricks' field) or in ``params``."""
    if not isinstance(payload, dict):
        return None
    value = payload.get("client_request_id")
    params = payload.get("params")
    if value is None and isinstance(params, dict):
        value = params.get("client_request_id")
    return None if value is None else str(value)[:256]
