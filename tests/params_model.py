"""A models-from-code pyfunc (tests only) that takes ``params``: what a per-subject model sees.

Probability ``0.5 + offset`` and label ``subject_id`` for every row, from the request's
``params`` (defaults from the signature's params schema). With ``model_config`` ``fast``
(the default) it offers ``predict_matrix(matrix, params=...)`` and ``n_features``, the
server's fast path; otherwise only ``predict``.
"""
import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class ParamsModel(PythonModel):
    n_features = None

    def load_context(self, context):
        config = context.model_config or {}
        self.n_features = int(config["n_features"]) if config.get("fast", True) else None

    def predict_matrix(self, matrix, params=None):
        params = params or {}
        n = len(matrix)
        return (np.full(n, 0.5 + float(params.get("offset", 0.0))),
                np.full(n, int(params.get("subject_id", -1)), dtype=np.int64))

    def predict(self, context, model_input, params=None):
        proba, label = self.predict_matrix(np.asarray(model_input), params)
        return pd.DataFrame({"probability": proba, "label": label})


set_model(ParamsModel())
