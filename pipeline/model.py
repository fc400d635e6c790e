"""The served model: a classifier pipeline (pipeline/classifiers.py) wrapped as an MLflow pyfunc.

One class for every consumer: the local endpoint server calls ``predict_matrix`` on a
float32 matrix (its fast path), ``mlflow models serve``, Databricks Model Serving and
``mlflow.pyfunc.spark_udf`` call ``predict``. Both return, per epoch, the Target
probability and the predicted label (the configured event ids: Target 2, NonTarget 1).

A model that re-centres subjects (``training.alignment: recenter``) takes the subject's
reference through the optional request ``params`` (declared in the signature, so the
input contract is unchanged): ``reference``, the subject's channels x channels reference
flattened row by row, or ``calibration``, a block of the subject's unlabelled epochs
flattened epoch by epoch, from which the model computes it. With neither it scores
source-only (the training subjects' mean reference).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel
from sklearn.pipeline import Pipeline

from pipeline.classifiers import alignment_of, build_classifier, calibration_reference, predict_proba_with_reference
from pipeline.serving.scoring import InputError, as_matrix  # the one input validator, shared with the endpoint server

__all__ = ["P300Model", "build_estimator", "model_signature", "as_matrix", "PARAM_REFERENCE", "PARAM_CALIBRATION"]

PARAM_REFERENCE = "reference"
PARAM_CALIBRATION = "calibration"


def build_estimator(classifier: str = "lda", n_times: int = 1, alignment: str = "none") -> Pipeline:
    """A classifier pipeline by registry name; the default ``n_times=1`` reads every feature as a
    channel, which the vector classifiers (lda, lda_plain) accept for any feature count."""
    return build_classifier(classifier, n_times, alignment)


class P300Model(PythonModel):
    """A fitted pipeline plus the label convention; picklable, no Spark or pipeline state."""

    def __init__(self, estimator: Pipeline, n_features: int, target_label: int = 2, nontarget_label: int = 1,
                 classifier: str | None = None):
        self.estimator = estimator
        self.n_features = int(n_features)
        self.target_label = int(target_label)
        self.nontarget_label = int(nontarget_label)
        self.classifier = classifier
        classes = list(getattr(estimator, "classes_", []))  # pipelines learn is-Target: classes [0, 1]
        self._target_col = classes.index(target_label) if target_label in classes and classes != [0, 1] else 1

    @property
    def alignment(self) -> str:
        return alignment_of(self.estimator)

    def reference(self, params: dict[str, Any] | None) -> np.ndarray | None:
        """The subject's reference from request params (None: source-only); InputError (the
        caller's mistake: 400 from the endpoint) when they are malformed."""
        try:
            return self._reference(params or {})
        except ValueError as exc:
            raise InputError(f"params: {exc}") from None

    def _reference(self, params: dict[str, Any]) -> np.ndarray | None:
        ref, block = params.get(PARAM_REFERENCE), params.get(PARAM_CALIBRATION)
        if ref is not None and len(ref):
            ref = np.asarray(ref, dtype=np.float64)
            n = int(round(np.sqrt(ref.size)))
            if n * n != ref.size or not np.isfinite(ref).all():
                raise ValueError(f"reference: {ref.size} values is not a finite square matrix (channels x channels)")
            epochs = self.estimator.named_steps.get("epochs")
            channels = self.n_features // epochs.n_times if epochs is not None else n
            if n != channels:
                raise ValueError(f"reference is {n} x {n}; this model's epochs have {channels} channels")
            ref = ref.reshape(n, n)
            if not np.allclose(ref, ref.T) or np.linalg.eigvalsh(ref).min() <= 0:
                raise ValueError("reference: not a symmetric positive definite matrix")
            return ref
        if block is not None and len(block):
            flat = np.asarray(block, dtype=np.float32)
            if flat.size % self.n_features:
                raise ValueError(f"params.calibration: {flat.size} values is not a whole number of epochs of "
                                 f"{self.n_features} features")
            return calibration_reference(self.estimator, as_matrix(flat.reshape(-1, self.n_features),
                                                                  self.n_features))
        return None

    def predict_matrix(self, matrix: np.ndarray, reference: np.ndarray | None = None,
                       params: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Target probability float64, label int64) for a validated float32 matrix; the
        subject's reference given directly or through request ``params``."""
        if reference is None and params:
            reference = self.reference(params)
        proba = predict_proba_with_reference(self.estimator, matrix, reference)[:, self._target_col]
        labels = np.where(proba >= 0.5, self.target_label, self.nontarget_label).astype(np.int64)
        return proba.astype(np.float64), labels

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """DataFrame[probability, label] for any input ``as_matrix`` accepts (else ValueError
        saying what is wrong, as the endpoint server would answer it). The hint is
        np.ndarray (what the tensor signature delivers) because MLflow reads this hint: it
        skips schema inference for it, where Any or a Union would draw a warning."""
        matrix = as_matrix(model_input, self.n_features)
        proba, labels = self.predict_matrix(matrix, self.reference(params))
        return pd.DataFrame({"probability": proba, "label": labels})


def model_signature(n_features: int):
    """Tensor input (float32, (-1, n_features)): per-column schema checks of 1000+ named
    columns would dominate request time. Output: probability and label per epoch. Params:
    the optional subject reference or calibration block (flat lists; empty: none)."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_features))]),
        outputs=Schema([ColSpec("double", "probability"), ColSpec("long", "label")]),
        params=ParamSchema([ParamSpec(PARAM_REFERENCE, "double", [], (-1,)),
                            ParamSpec(PARAM_CALIBRATION, "double", [], (-1,))]),
    )
