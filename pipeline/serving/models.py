"""Model versions in memory, scoring one request, and the hot swap of an endpoint's config.

A model is loaded once per (name, version) and warmed up before any config that uses it
becomes active. An endpoint's :class:`ActiveConfig` is replaced whole, in one reference
assignment, never mutated: a request reads the reference once, so a request in flight
finishes on the config it started with and none fails during a swap.

Scoring: a model whose pyfunc wraps an object with ``predict_matrix`` and ``n_features``
(``pipeline.model.P300Model``) gets the validated float32 matrix directly (no pandas, no
schema pass); any other pyfunc gets ``pyfunc.predict``. A request's ``params`` go to
``predict_matrix(matrix, params=...)`` when it declares that argument, else to
``pyfunc.predict(model_input, params=...)``; either way checked by MLflow against the
signature's params schema. A model that declares none ignores them (MLflow's behaviour).
"""
from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pipeline.serving import scoring
from pipeline.serving.errors import ApiError
from pipeline.serving.routes import Router

try:  # 5x faster than json on a 100-epoch `inputs` body (4 ms vs 21 ms for 2.3 MB on 2 cores)
    import orjson
except ImportError:  # pragma: no cover - pinned in requirements.txt; json is the fallback
    orjson = None

__all__ = ["LoadedModel", "load_model", "ActiveConfig", "score", "loads"]


@dataclass
class LoadedModel:
    """A model version in memory: the pyfunc, and ``predict_matrix`` when it has one."""

    entity_name: str
    version: str
    pyfunc: Any
    fast: Callable[..., tuple[np.ndarray, np.ndarray]] | None
    n_features: int | None
    params_schema: Any = None  # mlflow ParamSchema, or None: the model takes no params
    fast_takes_params: bool = False
    tensor_dtype: Any = None  # numpy dtype of a one-tensor input signature (JSON numbers arrive as float64)
    loaded_at: float = field(default_factory=time.time)


def _signature_width(pyfunc: Any) -> int | None:
    """Feature count from a model's input signature (one tensor, or named columns)."""
    try:
        schema = pyfunc.metadata.get_input_schema()
    except Exception:  # no signature
        return None
    if schema is None:
        return None
    if schema.is_tensor_spec():
        shape = schema.inputs[0].shape if len(schema.inputs) == 1 else None
        return int(shape[-1]) if shape and len(shape) == 2 and shape[-1] > 0 else None
    return len(schema.inputs)


def _tensor_dtype(pyfunc: Any) -> Any:
    try:
        schema = pyfunc.metadata.get_input_schema()
    except Exception:  # no signature
        return None
    if schema is None or not schema.is_tensor_spec() or len(schema.inputs) != 1:
        return None
    return schema.inputs[0].type


def load_model(entity_name: str, version: str) -> LoadedModel:
    """Load ``models:/entity_name/version`` and warm it up (the first call pays import costs)."""
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(f"models:/{entity_name}/{version}")
    try:
        inner = pyfunc.unwrap_python_model()
    except Exception:  # not a python_model flavor: served through pyfunc.predict
        inner = None
    try:
        params_schema = pyfunc.metadata.get_params_schema()
    except Exception:  # no signature
        params_schema = None
    fast, n_features, takes_params = None, None, False
    if inner is not None and callable(getattr(inner, "predict_matrix", None)) and getattr(inner, "n_features", None):
        fast = inner.predict_matrix
        n_features = int(inner.n_features)
        takes_params = "params" in inspect.signature(fast).parameters
    else:
        n_features = _signature_width(pyfunc)
    model = LoadedModel(entity_name, version, pyfunc, fast, n_features, params_schema, takes_params,
                        _tensor_dtype(pyfunc))
    if fast is not None:  # noise, not zeros: a covariance-based pipeline (xDAWN + tangent space) needs full rank
        warm = np.random.default_rng(0).standard_normal((4, n_features)).astype(np.float32)
        try:
            fast(warm)
        except Exception:  # noqa: BLE001 - warming up is an optimisation; the first request then pays for it
            pass
    return model


@dataclass(frozen=True)
class ActiveConfig:
    """What an endpoint serves now; replaced whole, never mutated (the hot swap)."""

    spec: Any  # store.ConfigSpec
    version: int
    models: dict[str, LoadedModel]
    ready_at: dict[str, int]
    route: Router

    @classmethod
    def build(cls, spec: Any, version: int, models: dict[str, LoadedModel], ready_at: dict[str, int]) -> "ActiveConfig":
        return cls(spec, version, models, ready_at, Router(spec.routes))


def loads(body: bytes, what: str) -> Any:
    """JSON from a request body; 400 with the parser's reason when it is not JSON."""
    if not body:
        raise ApiError(400, "MALFORMED_REQUEST", f"{what}: empty body, expected JSON")
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity literals (Python's json writes them), huge numbers, or broken JSON: json decides
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "MALFORMED_REQUEST", f"{what}: body is not valid JSON ({str(exc)[:200]})") from None


def _checked_params(model: LoadedModel, params: dict[str, Any]) -> dict[str, Any] | None:
    """``params`` checked against the model's params schema (MLflow's own check), defaults filled.
    A model whose signature declares no params ignores them, as MLflow's scoring server does
    (they may be there for the inference log, e.g. a ``subject_id`` to join labels on)."""
    if model.params_schema is None:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.models.utils import _enforce_params_schema

    try:
        return _enforce_params_schema(params, model.params_schema)
    except MlflowException as exc:
        raise ApiError(400, "BAD_REQUEST", f"params: {exc.message[:500]}") from None


def score(model: LoadedModel, body: bytes, seen: dict[str, Any] | None = None) -> bytes:
    """Parse, validate, predict, encode: the CPU part of one invocation. Input errors answer
    400; an error inside the model propagates (the caller answers 500). ``seen`` receives the
    body's ``client_request_id`` once it is parsed (for the inference log)."""
    try:
        payload = loads(body, "invocation")
        if seen is not None:
            seen["client_request_id"] = scoring.client_request_id(payload)
        fmt, data = scoring.parse_inputs(payload)
        params = scoring.parse_params(payload)
        if params is not None:
            params = _checked_params(model, params)
        if model.fast is not None and (params is None or model.fast_takes_params):
            matrix = scoring.as_matrix(scoring.rows_of(fmt, data), model.n_features, fmt)
        else:
            model_input = scoring.generic_input(fmt, data)
            if model.tensor_dtype is not None and fmt in ("inputs", "instances"):  # as MLflow's scoring server
                model_input = scoring.as_matrix(model_input, model.n_features, fmt).astype(model.tensor_dtype,
                                                                                           copy=False)
    except scoring.InputError as exc:
        raise ApiError(400, "BAD_REQUEST", str(exc)) from None
    if model.fast is not None and (params is None or model.fast_takes_params):
        try:
            proba, labels = model.fast(matrix) if params is None else model.fast(matrix, params=params)
        except scoring.InputError as exc:  # the model refused the request's params (e.g. a subject reference)
            raise ApiError(400, "BAD_REQUEST", str(exc)) from None
        preds = [{"probability": p, "label": l} for p, l in zip(proba.tolist(), labels.tolist())]
        return orjson.dumps({"predictions": preds}) if orjson is not None else \
            json.dumps({"predictions": preds}).encode()
    try:
        output = model.pyfunc.predict(model_input, params=params)
    except Exception as exc:  # noqa: BLE001 - schema enforcement and model errors on the caller's input
        from mlflow.exceptions import MlflowException

        if isinstance(exc, (MlflowException, ValueError, TypeError, KeyError)):
            raise ApiError(400, "BAD_REQUEST", f"{type(exc).__name__}: {str(exc)[:500]}") from None
        raise
    return json.dumps({"predictions": scoring.predictions_body(output)}, default=scoring.json_default).encode()
