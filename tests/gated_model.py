"""A models-from-code pyfunc (tests only): loading waits while the configured hold file exists.

Predicts probability 0.5 and label 1 for every row; its use is to hold an endpoint's
config update IN_PROGRESS for exactly as long as a test wants.
"""
import time
from pathlib import Path

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class GatedModel(PythonModel):
    def load_context(self, context):
        hold = Path((context.model_config or {}).get("hold_file", "/nonexistent"))
        deadline = time.monotonic() + 120
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        n = len(model_input)
        return pd.DataFrame({"probability": [0.5] * n, "label": [1] * n})


set_model(GatedModel())
