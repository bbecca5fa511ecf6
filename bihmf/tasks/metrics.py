"""Evaluation metrics in numpy (Kendall via scipy), so training jobs need no scikit-learn at runtime.

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


def _clean_pairs(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validated, equally long, finite float arrays (regression and classification inputs)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.size != p.size or y.size == 0:
        raise ValueError(f"need equally long, non-empty inputs: y_true has {y.size}, y_pred {p.size} entries")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise ValueError("y_true and y_pred must be finite")
    return y, p


def accuracy(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Fraction of exact matches between class indices (top-1 accuracy, as ProNet reports)."""
    y, p = _clean_pairs(y_true, y_pred)
    w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
    return float(np.sum(w * (y == p)) / np.sum(w))


def rmse(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Root mean squared error (ATOM3D LBA's primary metric, in pK units)."""
    y, p = _clean_pairs(y_true, y_pred)
    w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
    return float(np.sqrt(np.sum(w * (y - p) ** 2) / np.sum(w)))


def pearson(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Pearson correlation; a constant input has no defined correlation and raises."""
    y, p = _clean_pairs(y_true, y_pred)
    y, p = y - y.mean(), p - p.mean()
    denominator = np.sqrt(np.sum(y * y) * np.sum(p * p))
    if denominator == 0:
        raise ValueError("correlation undefined: an input is constant")
    return float(np.sum(y * p) / denominator)


def average_ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks with ties sharing their mean rank (what Spearman's rho is defined on)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Spearman's rho: Pearson correlation of average ranks."""
    y, p = _clean_pairs(y_true, y_pred)
    return pearson(average_ranks(y), average_ranks(p))


def kendall(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Kendall's tau-b (scipy's O(n log n) implementation; PSR test sets have ~16k decoys)."""
    from scipy.stats import kendalltau

    y, p = _clean_pairs(y_true, y_pred)
    tau = kendalltau(y, p).statistic
    if not np.isfinite(tau):
        raise ValueError("correlation undefined: an input is constant")
    return float(tau)


METRICS: dict[str, Metric] = {
    "auprc": Metric(auprc, higher_is_better=True),
    "roc_auc": Metric(roc_auc, higher_is_better=True),
    "accuracy": Metric(accuracy, higher_is_better=True),
    "rmse": Metric(rmse, higher_is_better=False),
    "pearson": Metric(pearson, higher_is_better=True),
    "spearman": Metric(spearman, higher_is_better=True),
    "kendall": Metric(kendall, higher_is_better=True),
}

GROUP_MEAN_PREFIX = "mean_"


def group_mean(name: str, y_true: ArrayLike, y_pred: ArrayLike, groups: list[str]) -> tuple[float, int]:
    """Unweighted mean of metric ``name`` within each group (ATOM3D's per-target PSR metrics).

    Groups where the metric is undefined (fewer than 2 members, a constant input) are skipped;
    the number of groups used is returned beside the mean so a report can say how many counted.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    labels = np.asarray(groups)
    values = []
    for group in dict.fromkeys(groups):
        members = labels == group
        if members.sum() < 2:
            continue
        try:
            values.append(METRICS[name].fn(y[members], p[members]))
        except ValueError:
            continue
    if not values:
        raise ValueError(f"{GROUP_MEAN_PREFIX}{name} undefined: no group has 2+ members with varying values")
    return float(np.mean(values)), len(values)



def is_metric(name: str) -> bool:
    """A registered metric (or its per-group mean); counts such as ``n_groups`` describe a
    metric and are kept beside the metrics, not as one."""
    return name.removeprefix(GROUP_MEAN_PREFIX) in METRICS


def higher_is_better(metric: str) -> bool:
    return METRICS[metric.removeprefix(GROUP_MEAN_PREFIX)].higher_is_better
