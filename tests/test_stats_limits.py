"""A bootstrap past its limits is reported with its counts but never called significant."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bihmf.report.stats import (
    MAX_UNDEFINED_FRACTION, MIN_BOOTSTRAP_PROTEINS, bootstrap_comparison, comparison_text, result_fields,
)


def _fields(n_proteins: int, undefined: int, resamples: int = 500) -> dict:
    """The lba_demo case: Pearson over test proteins, every defined resample Δ = -2."""
    a = np.full(resamples, -1.0)
    b = np.full(resamples, 1.0)
    a[:undefined] = np.nan
    return result_fields(bootstrap_comparison(-2.0, a, b, n_proteins, 0.95), "pearson", 0.95)


def test_two_proteins_are_not_called_significant() -> None:
    fields = _fields(2, undefined=253)
    assert fields["ci_low"] == fields["ci_high"] == -2.0  # the interval alone would exclude 0
    assert fields["significant"] is None
    assert (fields["resamples"], fields["undefined_resamples"], fields["n"]) == (500, 253, 2)
    assert f"too few proteins (2 < {MIN_BOOTSTRAP_PROTEINS})" in fields["note"]
    text = comparison_text(pd.Series({**fields, "baseline_encoder": "gvp", "baseline_fusion": "serial"}))
    assert "too few proteins" in text and "253 of 500 resamples undefined" in text


def test_largely_undefined_resamples_are_not_called_significant() -> None:
    undefined = int(MAX_UNDEFINED_FRACTION * 500) + 1
    fields = _fields(50, undefined=undefined)
    assert fields["significant"] is None
    assert f"too many undefined resamples ({undefined} of 500)" in fields["note"]


def test_enough_proteins_and_defined_resamples_are_tested() -> None:
    fields = _fields(50, undefined=0)
    assert fields["significant"] is True and fields["note"] == ""
