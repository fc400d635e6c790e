"""Plots for training and evaluation runs: plain functions of arrays returning a Figure.

Figures are built with ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot
state), so they are safe in servers and threads and are freed when dropped. Log them
with ``mlflow.log_figure(fig, "plots/x.png")`` or write them with ``save_png``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

__all__ = [
    "erp_figure",
    "grand_average",
    "roc_figure",
    "roc_compare_figure",
    "confusion_figure",
    "per_subject_figure",
    "save_png",
]


def _figure(width: float = 6.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def grand_average(
    X: np.ndarray, y: np.ndarray, n_times: int, channel: int, target_label: int = 2, nontarget_label: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard error over epochs of one channel, for targets and non-targets.

    ``X`` is (n_epochs, n_channels * n_times), channel-major (as preprocess writes it);
    only the channel's column block is read, never a copy of the whole matrix.
    Returns (target_mean, target_sem, nontarget_mean, nontarget_sem), each (n_times,).
    """
    if X.shape[1] % n_times:
        raise ValueError(f"feature length {X.shape[1]} is not a multiple of n_times={n_times}")
    n_channels = X.shape[1] // n_times
    if not 0 <= channel < n_channels:
        raise ValueError(f"channel index {channel} outside 0..{n_channels - 1}")
    block = X[:, channel * n_times:(channel + 1) * n_times]
    out = []
    for label in (target_label, nontarget_label):
        rows = block[y == label].astype(np.float64)
        mean = rows.mean(axis=0) if len(rows) else np.full(n_times, np.nan)
        sem = rows.std(axis=0, ddof=1) / np.sqrt(len(rows)) if len(rows) > 1 else np.zeros(n_times)
        out += [mean, sem]
    return out[0], out[1], out[2], out[3]


def erp_figure(
    times_s: np.ndarray,
    target_mean: np.ndarray,
    nontarget_mean: np.ndarray,
    channel_name: str,
    target_sem: np.ndarray | None = None,
    nontarget_sem: np.ndarray | None = None,
    n_target: int | None = None,
    n_nontarget: int | None = None,
    title: str | None = None,
) -> Figure:
    """Grand-average ERP, target vs non-target, with a +-1 SEM band when given."""
    fig = _figure()
    ax = fig.add_subplot()
    t_ms = np.asarray(times_s) * 1000.0
    for mean, sem, name, count, color in (
        (target_mean, target_sem, "Target", n_target, "tab:red"),
        (nontarget_mean, nontarget_sem, "NonTarget", n_nontarget, "tab:blue"),
    ):
        label = name if count is None else f"{name} (n={count})"
        ax.plot(t_ms, mean, color=color, lw=1.8, label=label)
        if sem is not None:
            ax.fill_between(t_ms, mean - sem, mean + sem, color=color, alpha=0.2, lw=0)
    ax.plot(t_ms, np.asarray(target_mean) - np.asarray(nontarget_mean), color="k", lw=1, ls="--",
            label="difference")
    ax.axvline(0, color="grey", lw=0.8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("time after stimulus (ms)")
    ax.set_ylabel("amplitude (uV)")
    ax.set_title(title or f"Grand-average ERP at {channel_name}")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def roc_compare_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], pos_label: int = 2, title: str = "ROC curve"
) -> Figure:
    """One ROC curve per entry {name: (y_true, target_scores)}, each labelled with its AUC."""
    fig = _figure(5.0, 5.0)
    ax = fig.add_subplot()
    for name, (y_true, scores) in curves.items():
        y_true = np.asarray(y_true)
        if len(np.unique(y_true)) < 2:
            ax.plot([], [], label=f"{name} (single class, no ROC)")
            continue
        fpr, tpr, _ = roc_curve(y_true, scores, pos_label=pos_label)
        auc = roc_auc_score(y_true == pos_label, scores)
        ax.plot(fpr, tpr, lw=1.8, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (Target)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def roc_figure(
    y_true: np.ndarray, scores: np.ndarray, pos_label: int = 2, title: str = "ROC curve", name: str = "model"
) -> Figure:
    """ROC curve of Target scores (probabilities) against true labels."""
    return roc_compare_figure({name: (y_true, scores)}, pos_label=pos_label, title=title)


def confusion_figure(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: Sequence[int] = (1, 2),
    names: Sequence[str] = ("NonTarget", "Target"),
    title: str = "Confusion matrix",
) -> Figure:
    """Counts with row-normalised rates (recall per true class) in each cell."""
    cm = confusion_matrix(y_true, y_pred, labels=list(labels))
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = _figure(4.5, 4.0)
    ax = fig.add_subplot()
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


def per_subject_figure(table: Mapping[str, Mapping[int, float]], title: str = "ROC AUC per left-out subject") -> Figure:
    """One line of markers per candidate {name: {subject: auc}}, subjects on the x axis, the
    candidate's mean as a dashed line: the spread and the worst subject at a glance."""
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    subjects = sorted({s for per in table.values() for s in per})
    x = np.arange(len(subjects))
    for i, (name, per) in enumerate(table.items()):
        values = np.array([per.get(s, np.nan) for s in subjects], dtype=float)
        line = ax.plot(x, values, marker="o", lw=0.8, label=f"{name} (mean {np.nanmean(values):.3f}, "
                                                          f"min {np.nanmin(values):.3f})")[0]
        ax.axhline(np.nanmean(values), color=line.get_color(), lw=0.8, ls="--")
    ax.set_xticks(x, [str(s) for s in subjects])
    ax.set_xlabel("left-out subject")
    ax.set_ylabel("ROC AUC")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
