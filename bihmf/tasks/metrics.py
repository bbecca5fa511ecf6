"""Evaluation metrics, re-implemented in numpy so training jobs need no scikit-learn at runtime.

The binary metrics reproduce scikit-learn's numbers exactly (ties, sample weights), because
published ScanNet/PPBS results are computed that way and our tables must be comparable with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

MetricFn = Callable[..., float]


class Metric(NamedTuple):
    """A metric function and the direction in which it improves (used to pick the best cell)."""

    fn: MetricFn
    higher_is_better: bool


def _clean_binary_inputs(
    y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Validate inputs and drop unlabeled and zero-weight entries.

    ScanNet marks residues without a label as -1 (and some loaders produce NaN); they must not
    count as negatives. Zero-weight entries are dropped because scikit-learn drops them, and a
    zero-weight sample can otherwise add a spurious threshold to the curve.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
    if not (y.size == s.size == w.size):
        raise ValueError(
            f"length mismatch: y_true has {y.size}, y_score {s.size}, "
            f"sample_weight {w.size} entries"
        )
    if y.size == 0:
        raise ValueError("empty input: y_true and y_score have no entries")

    labeled = ~(np.isnan(y) | (y < 0))
    y, s, w = y[labeled], s[labeled], w[labeled]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 0, 1, or missing (<0 / NaN); got {np.unique(y)[:10]}")
    if not np.isfinite(s).all():
        raise ValueError("y_score contains NaN or infinite values at labeled positions")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError("sample_weight must be finite and non-negative")

    keep = w > 0
    y, s, w = y[keep], s[keep], w[keep]
    if not ((y == 1).any() and (y == 0).any()):
        raise ValueError(
            f"need both classes after dropping missing labels and zero weights; "
            f"got {y.size} entries with classes {np.unique(y).astype(int).tolist()}"
        )
    return y, s, w


def _cumulative_counts(
    y: NDArray[np.float64], s: NDArray[np.float64], w: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Weighted true/false positive counts at each distinct threshold, highest score first.

    Tied scores form a single threshold, so a block of ties moves the curve in one straight
    segment instead of in an order-dependent staircase.
    """
    order = np.argsort(-s, kind="stable")
    y, s, w = y[order], s[order], w[order]
    last_of_tie_block = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y * w)[last_of_tie_block]
    fps = np.cumsum((1.0 - y) * w)[last_of_tie_block]
    return tps, fps


def auprc(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Trapezoidal area under the precision-recall curve (ScanNet's AUCPR).

    This is ``auc(recall, precision)`` over ``precision_recall_curve``, not average precision:
    ScanNet reports it, so matching it keeps our numbers comparable. The curve is anchored at
    (recall 0, precision 1), and linear interpolation is used between thresholds.
    """
    tps, fps = _cumulative_counts(*_clean_binary_inputs(y_true, y_score, sample_weight))
    recall = np.r_[0.0, tps / tps[-1]]
    precision = np.r_[1.0, tps / (tps + fps)]
    return float(np.trapezoid(precision, recall))


def roc_auc(y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Area under the ROC curve; tied scores count as half-correct, as in scikit-learn."""
    tps, fps = _cumulative_counts(*_clean_binary_inputs(y_true, y_score, sample_weight))
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.trapezoid(tpr, fpr))


METRICS: dict[str, Metric] = {
    "auprc": Metric(auprc, higher_is_better=True),
    "roc_auc": Metric(roc_auc, higher_is_better=True),
}
