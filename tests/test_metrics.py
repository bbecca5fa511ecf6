"""The numpy metrics must agree with scikit-learn, which defines the published ScanNet numbers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score

from bihmf.tasks.metrics import METRICS, auprc, roc_auc

SEEDS = range(8)


def _sklearn_auprc(y, p, w=None) -> float:
    precision, recall, _ = precision_recall_curve(y, p, sample_weight=w)
    return auc(recall, precision)


def _random_case(seed: int, *, ties: bool, weighted: bool, n: int = 300):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(0.35 * y + rng.random(n) * 0.8, 0.0, 1.0)
    if ties:
        p = np.round(p, 1)
    w = rng.random(n) * 3.0 if weighted else None
    return y, p, w


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_sklearn(seed: int, ties: bool, weighted: bool) -> None:
    y, p, w = _random_case(seed, ties=ties, weighted=weighted)
    assert auprc(y, p, w) == pytest.approx(_sklearn_auprc(y, p, w), abs=1e-10)
    assert roc_auc(y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_missing_labels_are_dropped(seed: int, weighted: bool) -> None:
    y, p, w = _random_case(seed, ties=True, weighted=weighted)
    rng = np.random.default_rng(100 + seed)
    y_missing = y.astype(float)
    y_missing[rng.random(y.size) < 0.2] = -1.0
    y_missing[rng.random(y.size) < 0.05] = np.nan
    keep = y_missing >= 0  # NaN compares False
    wk = None if w is None else w[keep]
    assert auprc(y_missing, p, w) == pytest.approx(_sklearn_auprc(y[keep], p[keep], wk), abs=1e-10)
    assert roc_auc(y_missing, p, w) == pytest.approx(
        roc_auc_score(y[keep], p[keep], sample_weight=wk), abs=1e-10
    )


def test_zero_weights_match_sklearn() -> None:
    y, p, w = _random_case(3, ties=True, weighted=True)
    w[::4] = 0.0
    assert auprc(y, p, w) == pytest.approx(_sklearn_auprc(y, p, w), abs=1e-10)
    assert roc_auc(y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-10)


def test_known_values() -> None:
    # Perfect ranking: both areas are exactly 1; all scores tied: ROC is the diagonal.
    assert auprc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)


@pytest.mark.parametrize("fn", [auprc, roc_auc])
@pytest.mark.parametrize(
    ("y", "p", "w", "match"),
    [
        ([], [], None, "empty"),
        ([0, 1], [0.1], None, "length"),
        ([0, 1], [0.1, 0.2], [1.0], "length"),
        ([1, 1, -1], [0.1, 0.2, 0.3], None, "both classes"),
        ([-1, -1, np.nan], [0.1, 0.2, 0.3], None, "both classes"),
        ([0, 1, 1], [0.1, 0.2, 0.3], [1.0, 0.0, 0.0], "both classes"),
        ([0, 2], [0.1, 0.2], None, "labels"),
        ([0, 1], [0.1, np.nan], None, "y_score"),
        ([0, 1], [0.1, 0.2], [1.0, -1.0], "sample_weight"),
    ],
)
def test_invalid_inputs_raise(fn, y, p, w, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fn(y, p, w)


def test_registry() -> None:
    assert METRICS["auprc"].fn is auprc and METRICS["roc_auc"].fn is roc_auc
    fn, higher_is_better = METRICS["roc_auc"]
    assert higher_is_better and fn([0, 1], [0.0, 1.0]) == pytest.approx(1.0)
