"""The classifier registry: ``training.classifier`` names one of these scikit-learn pipelines.

Every pipeline takes the flattened feature vectors of the features table, (n, channels x
times), and first reshapes them to epochs (n, channels, times). The number of times per
channel is the preprocessing configuration's ``n_times`` (the table's layout depends on
the configuration alone); the channel count is read from the data at fit time.

Pipelines are fitted on "is Target" (1) against the rest (0), whatever the configured
event ids: scikit-learn's CV helpers re-encode labels to 0..k-1 anyway, and the Target's
xDAWN prototype is then class 1 everywhere.

``training.alignment: recenter`` inserts :class:`SubjectRecenter` after the reshape: each
training subject's epochs are re-centred on that subject's own Riemannian mean epoch
covariance (Zanini et al. 2018), applied to the signals (x -> M^-1/2 x) so the reference
is a channels x channels matrix that does not depend on the fitted model and can be
stored per subject or sent with a request. At scoring time the reference comes from the
caller (a calibration block of the subject's unlabelled epochs, or a stored reference);
without one the step uses the training subjects' mean reference (source-only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["CLASSIFIERS", "ALIGNMENTS", "Epochs", "Flatten", "XdawnCovariances", "SubjectRecenter", "Candidate", "build_classifier",
           "parse_candidate", "classifier_params", "predict_proba_with_reference", "subject_reference",
           "alignment_of", "fit_params", "is_target", "TARGET"]

ALIGNMENTS = ("none", "recenter")
TARGET = 1  # the class the pipelines learn: 1 = Target epoch, 0 = any other
RECENTER = "recenter"


class Epochs(TransformerMixin, BaseEstimator):
    """(n, channels x times) -> (n, channels, times), a view; refuses vectors that do not
    split into whole channels of ``n_times`` samples."""

    def __init__(self, n_times: int = 71):
        self.n_times = n_times

    def fit(self, X: np.ndarray, y: Any = None, **_: Any) -> "Epochs":
        self.n_channels_ = self._channels(X)
        return self

    def _channels(self, X: np.ndarray) -> int:
        n_features = np.shape(X)[1]
        if n_features % self.n_times:
            raise ValueError(f"{n_features} features per epoch is not a whole number of channels of "
                             f"{self.n_times} samples (preprocess.n_times)")
        return n_features // self.n_times

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        return X.reshape(len(X), self._channels(X), self.n_times)


class Flatten(TransformerMixin, BaseEstimator):
    """(n, channels, times) -> (n, channels x times), for the vector classifiers."""

    def fit(self, X: np.ndarray, y: Any = None) -> "Flatten":
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X).reshape(len(X), -1)


def shrunk_covariances(X: np.ndarray) -> np.ndarray:
    """Schaefer-Strimmer shrinkage covariances of (..., channels, times), the estimator of
    pyRiemann's ``covariance_sch`` (a test keeps them equal) in plain numpy over the whole
    batch (pyRiemann's array-API dispatch cost more than the arithmetic on a 100-epoch
    request), plus a ridge of 1e-6 of the mean variance (and a tiny floor), so a flat or
    all-zero epoch (a warm-up call, a dead channel) still gives an SPD matrix instead of
    an error in the tangent space. A channel without variance has no shrinkage target:
    that epoch gets the unshrunk covariance (plus the ridge)."""
    X = np.asarray(X, dtype=np.float64)
    t = X.shape[-1]
    centred = X - X.mean(axis=-1, keepdims=True)
    scm = centred @ np.swapaxes(centred, -1, -2) / t
    var = np.diagonal(scm, axis1=-2, axis2=-1)
    var_outer = var[..., :, None] * var[..., None, :]
    off = ~np.eye(X.shape[-2], dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (t / (t - 1.0)) * scm / np.sqrt(var_outer)
        sq = centred * centred
        var_r = (sq @ np.swapaxes(sq, -1, -2) - t * scm * scm) * (t / ((t - 1.0) ** 3 * var_outer))
        r2 = np.sum(np.where(off, r * r, 0.0), axis=(-2, -1))
        gamma = np.clip(np.where(r2 == 0, 0.0, np.sum(np.where(off, var_r, 0.0), axis=(-2, -1)) / r2), 0.0, 1.0)
    gamma = np.where(np.isfinite(gamma), gamma, 0.0)[..., None, None]  # no variance: no shrinkage
    cov = (t / (t - 1.0)) * ((1.0 - gamma) * scm + gamma * (scm * ~off))
    n = cov.shape[-1]
    ridge = 1e-6 * np.trace(cov, axis1=-2, axis2=-1) / n + 1e-12
    return cov + ridge[..., None, None] * np.eye(n)


class XdawnCovariances(TransformerMixin, BaseEstimator):
    """pyRiemann's ``XdawnCovariances`` (xDAWN filters and class prototypes, then each
    epoch's covariance with the prototypes stacked on its filtered signals), vectorised
    over epochs with ``shrunk_covariances``. pyRiemann calls a callable estimator once per
    epoch in a Python loop, which made a 100-epoch request ~20x slower than the LDA and
    dominated training time; its own string estimators are either unregularised (scm) or
    looped too (lwf, oas). The filters come from pyRiemann's ``Xdawn``."""

    def __init__(self, nfilter: int = 4, classes: list[int] | None = None, xdawn_estimator: str = "lwf"):
        self.nfilter = nfilter
        self.classes = classes
        self.xdawn_estimator = xdawn_estimator

    def fit(self, X: np.ndarray, y: np.ndarray) -> "XdawnCovariances":
        from pyriemann.spatialfilters import Xdawn

        xd = Xdawn(nfilter=self.nfilter, classes=self.classes, estimator=self.xdawn_estimator)
        xd.fit(np.asarray(X, dtype=np.float64), y)
        self.filters_, self.P_ = xd.filters_, xd.evokeds_
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        filtered = self.filters_ @ np.asarray(X, dtype=np.float64)
        proto = np.broadcast_to(self.P_, (len(filtered),) + self.P_.shape)
        return shrunk_covariances(np.concatenate([proto, filtered], axis=1))


def subject_reference(epochs: np.ndarray) -> np.ndarray:
    """A subject's reference: the Riemannian mean of its epochs' covariances (Schaefer-Strimmer
    shrinkage, vectorised over epochs), channels x channels. Needs no labels."""
    from pyriemann.utils.mean import mean_riemann

    return mean_riemann(shrunk_covariances(epochs))


class SubjectRecenter(TransformerMixin, BaseEstimator):
    """Re-centres each subject on its own reference. pyRiemann's ``TLCenter`` does this for
    covariance matrices of domains known at fit time; here the reference of a new subject
    arrives at scoring time, and is applied to the signals, so this small step is ours."""

    def fit(self, X: np.ndarray, y: Any = None, groups: np.ndarray | None = None) -> "SubjectRecenter":
        self._fit_references(X, groups)
        return self

    def _fit_references(self, X: np.ndarray, groups: np.ndarray | None) -> dict[Any, np.ndarray]:
        from pyriemann.utils.mean import mean_riemann

        groups = np.zeros(len(X), dtype=np.int64) if groups is None else np.asarray(groups)
        refs = {g: subject_reference(X[groups == g]) for g in np.unique(groups)}
        stacked = np.stack(list(refs.values()))
        self.source_reference_ = stacked[0] if len(stacked) == 1 else mean_riemann(stacked)
        self.n_subjects_ = len(refs)
        return refs

    def fit_transform(self, X: np.ndarray, y: Any = None, groups: np.ndarray | None = None) -> np.ndarray:
        refs = self._fit_references(X, groups)
        groups = np.zeros(len(X), dtype=np.int64) if groups is None else np.asarray(groups)
        out = np.empty(X.shape, dtype=np.float64)
        for g, ref in refs.items():
            out[groups == g] = self.apply(X[groups == g], ref)
        return out

    @staticmethod
    def apply(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
        from pyriemann.utils.base import invsqrtm

        return np.einsum("ij,njt->nit", invsqrtm(np.asarray(reference, dtype=np.float64)), X)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Source-only: no reference for this subject, so the training subjects' mean."""
        return self.apply(X, self.source_reference_)


# ---- the registry ------------------------------------------------------------------------------

def _lda() -> list[tuple[str, Any]]:
    # lsqr + Ledoit-Wolf: plain LDA overfits 1000+ features per epoch
    return [("flatten", Flatten()), ("scaler", StandardScaler()),
            ("lda", LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))]


def _lda_plain() -> list[tuple[str, Any]]:
    return [("flatten", Flatten()), ("scaler", StandardScaler()), ("lda", LinearDiscriminantAnalysis())]


def _xdawn_ts() -> list[tuple[str, Any]]:
    """xDAWN filters and prototype of the Target response only (the NonTarget prototype adds
    little and doubles the matrices' size); Schaefer-Strimmer shrinkage per epoch with a
    small ridge, for all epochs at once (``XdawnCovariances`` above)."""
    from pyriemann.tangentspace import TangentSpace

    return [("xdawn", XdawnCovariances(nfilter=4, classes=[TARGET], xdawn_estimator="lwf")),
            ("tangent", TangentSpace(metric="riemann")),
            ("scaler", StandardScaler()),
            ("logreg", LogisticRegression(C=1.0, max_iter=1000))]


# name -> (steps after the reshape, one line for --help and tables)
CLASSIFIERS: dict[str, tuple[Callable[[], list[tuple[str, Any]]], str]] = {
    "lda": (_lda, "StandardScaler + shrinkage LDA (lsqr, Ledoit-Wolf) on the flattened epoch"),
    "lda_plain": (_lda_plain, "StandardScaler + LDA without shrinkage (the original's model)"),
    "xdawn_ts": (_xdawn_ts, "xDAWN covariances (4 Target filters, Schaefer-Strimmer) + pyRiemann TangentSpace + logistic regression"),
}


def build_classifier(name: str, n_times: int, alignment: str = "none") -> Pipeline:
    """The named pipeline over flattened features, unfitted; fit it on ``is_target(y)``."""
    if name not in CLASSIFIERS:
        raise ValueError(f"training.classifier: unknown classifier {name!r} (one of {', '.join(CLASSIFIERS)})")
    if alignment not in ALIGNMENTS:
        raise ValueError(f"training.alignment: unknown alignment {alignment!r} (one of {', '.join(ALIGNMENTS)})")
    steps: list[tuple[str, Any]] = [("epochs", Epochs(n_times))]
    if alignment == RECENTER:
        steps.append((RECENTER, SubjectRecenter()))
    return Pipeline(steps + CLASSIFIERS[name][0]())


def is_target(y: np.ndarray, target_label: int) -> np.ndarray:
    """The labels the pipelines learn from: 1 for the configured Target event id, else 0."""
    return (np.asarray(y) == target_label).astype(np.int64)


def fit_params(pipeline: Pipeline, groups: np.ndarray) -> dict[str, np.ndarray]:
    """What Pipeline.fit needs besides X and y: the subject of each epoch when it re-centres."""
    return {f"{RECENTER}__groups": groups} if RECENTER in pipeline.named_steps else {}


def alignment_of(pipeline: Pipeline) -> str:
    return RECENTER if RECENTER in pipeline.named_steps else "none"


def predict_proba_with_reference(pipeline: Pipeline, X: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """predict_proba, re-centring on ``reference`` (channels x channels) where the pipeline
    re-centres; no reference: the pipeline as fitted (source-only). Mutates nothing, so
    concurrent requests with different references are safe."""
    if reference is None or RECENTER not in pipeline.named_steps:
        return pipeline.predict_proba(X)
    at = list(pipeline.named_steps).index(RECENTER)
    epochs = pipeline[:at].transform(X)
    n_channels = epochs.shape[1]
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape != (n_channels, n_channels):
        reference = reference.reshape(n_channels, n_channels) if reference.size == n_channels ** 2 else reference
    if reference.shape != (n_channels, n_channels):
        raise ValueError(f"reference must be {n_channels} x {n_channels} (channels), got shape {reference.shape}")
    return pipeline[at + 1:].predict_proba(SubjectRecenter.apply(epochs, reference))


@dataclass(frozen=True)
class Candidate:
    """One entry of a comparison: a classifier and an alignment, written ``xdawn_ts+recenter``."""

    classifier: str
    alignment: str = "none"

    @property
    def name(self) -> str:
        return self.classifier if self.alignment == "none" else f"{self.classifier}+{self.alignment}"


def parse_candidate(text: str) -> Candidate:
    name, _, alignment = text.strip().partition("+")
    cand = Candidate(name, alignment or "none")
    build_classifier(cand.classifier, 2, cand.alignment)  # validates both names
    return cand


def classifier_params(pipeline: Pipeline) -> dict[str, str]:
    """Every step's class and parameters, for MLflow params (``classifier.xdawn.nfilter``)."""
    out = {"classifier.steps": ",".join(pipeline.named_steps)}
    for step, est in pipeline.steps:
        out[f"classifier.{step}"] = type(est).__name__
        out.update({f"classifier.{step}.{k}": str(v) for k, v in est.get_params(deep=False).items()})
    return out


def calibration_reference(pipeline: Pipeline, X: np.ndarray) -> np.ndarray | None:
    """A subject's reference from a block of its unlabelled flattened epochs, in the space the
    pipeline re-centres (None when it does not re-centre)."""
    if RECENTER not in pipeline.named_steps:
        return None
    at = list(pipeline.named_steps).index(RECENTER)
    return subject_reference(pipeline[:at].transform(X))
