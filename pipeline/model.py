"""The served model: StandardScaler + LDA wrapped as an MLflow pyfunc.

One class for every consumer: the local endpoint server calls ``predict_matrix`` on a
float32 matrix (its fast path), ``mlflow models serve``, Databricks Model Serving and
``mlflow.pyfunc.spark_udf`` call ``predict``. Both return, per epoch, the Target
probability and the predicted label (the configured event ids: Target 2, NonTarget 1).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.serving.scoring import as_matrix  # the one input validator, shared with the endpoint server

__all__ = ["P300Model", "build_estimator", "model_signature", "as_matrix"]


def build_estimator(kind: str = "shrinkage_lda") -> Pipeline:
    """shrinkage_lda (lsqr + Ledoit-Wolf) by default: plain LDA overfits 1000+ features per epoch."""
    if kind == "shrinkage_lda":
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    elif kind == "lda":
        lda = LinearDiscriminantAnalysis()
    else:
        raise ValueError(f"training.model: unknown model {kind!r} (shrinkage_lda or lda)")
    return Pipeline([("scaler", StandardScaler()), ("lda", lda)])


class P300Model(PythonModel):
    """A fitted estimator plus the label convention; picklable, no Spark or pipeline state."""

    def __init__(self, estimator: Pipeline, n_features: int, target_label: int = 2, nontarget_label: int = 1):
        self.estimator = estimator
        self.n_features = int(n_features)
        self.target_label = int(target_label)
        self.nontarget_label = int(nontarget_label)
        classes = list(getattr(estimator, "classes_", []))
        self._target_col = classes.index(target_label) if target_label in classes else 1

    def predict_matrix(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Target probability float64, label int64) for a validated float32 matrix."""
        proba = self.estimator.predict_proba(matrix)[:, self._target_col]
        labels = np.where(proba >= 0.5, self.target_label, self.nontarget_label).astype(np.int64)
        return proba.astype(np.float64), labels

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """DataFrame[probability, label] for any input ``as_matrix`` accepts (else ValueError
        saying what is wrong, as the endpoint server would answer it). The hint is
        np.ndarray (what the tensor signature delivers) because MLflow reads this hint: it
        skips schema inference for it, where Any or a Union would draw a warning."""
        proba, labels = self.predict_matrix(as_matrix(model_input, self.n_features))
        return pd.DataFrame({"probability": proba, "label": labels})


def model_signature(n_features: int):
    """Tensor input (float32, (-1, n_features)): per-column schema checks of 1000+ named
    columns would dominate request time. Output: probability and label per epoch."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_features))]),
        outputs=Schema([ColSpec("double", "probability"), ColSpec("long", "label")]),
    )
