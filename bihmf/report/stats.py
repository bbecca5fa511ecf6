"""Is Bi-HMF better than the best baseline? One statistical comparison per table column.

With two or more seeds run for both models, the test is a paired t-test over the seeds they
share (seed k of both models sees the same data order and initialisation seed). With a single
seed there is no seed spread to test against, so the comparison is a paired bootstrap over
test proteins: both models' saved per-protein test predictions are resampled with the same
protein draws and the metric difference gives a percentile confidence interval.

"Best baseline" is the non-Bi-HMF row with the best mean in that column, among the runs of
the same structure encoder plus the sequence-only run (encoder ``none``), so each Bi-HMF row
is compared with the strongest alternative that uses the same (or no) structure encoder.

A bootstrap knows its limits: with fewer than ``MIN_BOOTSTRAP_PROTEINS`` test proteins the
resamples are mostly repeats of the same few proteins, and when more than
``MAX_UNDEFINED_FRACTION`` of the resamples leave the metric undefined the interval describes
only the resamples that happened to be defined. Either way the comparison is reported (Δ, the
interval, the counts) but never called significant; the table says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bihmf.models.fusion import bihmf_fusions
from bihmf.models.model import NO_ENCODER
from bihmf.report.aggregate import metric_frame, shown_columns
from bihmf.report.format import Cell, Table, number
from bihmf.run import PREDICTION_KEYS, Predictions, RunRecord
from bihmf.tasks import TASKS
from bihmf.tasks.metrics import higher_is_better, is_metric

BIHMF_FUSIONS = bihmf_fusions()
STATS_COLUMNS = [
    "encoder", "fusion", "split", "metric", "baseline_encoder", "baseline_fusion", "test", "n", "delta",
    "ci_low", "ci_high", "p_value", "better", "significant", "resamples", "undefined_resamples", "note",
]
# fewest test proteins a bootstrap comparison may call significant
MIN_BOOTSTRAP_PROTEINS = 10
# largest share of undefined resamples a bootstrap comparison may call significant
MAX_UNDEFINED_FRACTION = 0.1


@dataclass(frozen=True)
class StatsSettings:
    bootstrap_samples: int
    confidence: float
    seed: int

    @classmethod
    def from_config(cls, report_cfg: dict[str, Any]) -> StatsSettings:
        return cls(int(report_cfg["bootstrap_samples"]), float(report_cfg["confidence"]), int(report_cfg["seed"]))


def split_rows(predictions: Predictions, split: str) -> Predictions:
    """Rows of ``test`` (all) or ``test_<subset>`` (rows of that subset)."""
    if split == "test":
        return predictions
    keep = predictions["subset"] == split.removeprefix("test_")
    return {name: values[keep] for name, values in predictions.items()}


@contextmanager
def _quiet_tasks() -> Iterator[None]:
    """Resamples routinely hit undefined metrics (a target with constant predictions); the task
    logs each one, which would flood the report's log with thousands of identical warnings."""
    logger = logging.getLogger("bihmf.tasks")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def evaluate_rows(task: str, rows: Predictions) -> dict[str, float]:
    """The task's own metrics on a set of prediction rows (undefined ones left out)."""
    part = {name: values for name, values in rows.items() if name not in PREDICTION_KEYS}
    if "group" in part:
        part["group"] = part["group"].tolist()
    try:
        values = TASKS[task].evaluate([part])
    except ValueError:  # e.g. a resample with one class only: every metric undefined
        return {}
    return {name: float(v) for name, v in values.items() if v is not None and is_metric(name)}


def _protein_layout(rows: Predictions, proteins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row order grouping each protein's rows, and each protein's start and row count in it."""
    order = np.argsort(rows["protein_id"], kind="stable")
    codes = np.searchsorted(proteins, rows["protein_id"][order])
    counts = np.bincount(codes, minlength=len(proteins))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, starts, counts


def _resample(order: np.ndarray, starts: np.ndarray, counts: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Row indices of the proteins in ``pick`` (with repeats), without a Python loop."""
    sizes = counts[pick]
    offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return order[np.repeat(starts[pick], sizes) + offsets]


def bootstrap_metrics(task: str, rows: Predictions, proteins: np.ndarray, settings: StatsSettings) -> dict[str, np.ndarray]:
    """Each metric on ``bootstrap_samples`` resamples of ``proteins`` (NaN where undefined).

    The draws depend only on the seed and the number of proteins, so every run of a dataset is
    resampled identically and differences between two runs' arrays are paired.
    """
    order, starts, counts = _protein_layout(rows, proteins)
    rng = np.random.default_rng(settings.seed)
    samples: dict[str, np.ndarray] = {}
    with _quiet_tasks():
        for b in range(settings.bootstrap_samples):
            picked = _resample(order, starts, counts, rng.integers(0, len(proteins), len(proteins)))
            for name, value in evaluate_rows(task, {k: v[picked] for k, v in rows.items()}).items():
                samples.setdefault(name, np.full(settings.bootstrap_samples, np.nan))[b] = value
    return samples


@dataclass
class Comparison:
    """One Bi-HMF cell against its baseline cell."""

    test: str
    n: int
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    note: str = ""
    resamples: int = 0  # bootstrap only: resamples drawn, and those where the difference was undefined
    undefined_resamples: int = 0

    @property
    def limit(self) -> str:
        """Why this bootstrap is too weak to call significant ("" when it is not)."""
        if self.test != "bootstrap":
            return ""
        if self.n < MIN_BOOTSTRAP_PROTEINS:
            return f"too few proteins ({self.n} < {MIN_BOOTSTRAP_PROTEINS})"
        if self.undefined_resamples > MAX_UNDEFINED_FRACTION * self.resamples:
            return f"too many undefined resamples ({self.undefined_resamples} of {self.resamples})"
        return ""


def paired_t(a: dict[int, float], b: dict[int, float], confidence: float) -> Comparison:
    """Paired t-test over shared seeds, with the t-interval of the mean difference."""
    seeds = sorted(set(a) & set(b))
    diff = np.array([a[s] - b[s] for s in seeds])
    mean = float(diff.mean())
    spread = float(diff.std(ddof=1))
    if spread == 0.0:
        return Comparison("paired t-test", len(seeds), mean, mean, mean, np.nan, "identical differences: p undefined")
    half = stats.t.ppf(0.5 + confidence / 2, len(seeds) - 1) * spread / np.sqrt(len(seeds))
    p_value = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    return Comparison("paired t-test", len(seeds), mean, mean - half, mean + half, p_value)


def bootstrap_comparison(point: float, a: np.ndarray, b: np.ndarray, n_proteins: int, confidence: float) -> Comparison:
    """Percentile interval of the paired difference; resamples where either is undefined drop out."""
    diff = a - b
    diff = diff[np.isfinite(diff)]
    dropped = len(a) - len(diff)
    note = f"{dropped} of {len(a)} resamples undefined" if dropped else ""
    if not len(diff):
        return Comparison("bootstrap", n_proteins, point, np.nan, np.nan, np.nan, "every resample undefined", len(a), dropped)
    low, high = np.quantile(diff, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return Comparison("bootstrap", n_proteins, point, float(low), float(high), np.nan, note, len(a), dropped)


def best_baseline(summary: pd.DataFrame, encoder: str, split: str, metric: str) -> tuple[str, str] | None:
    """The non-Bi-HMF row of this encoder (or of no encoder) with the best mean in the column."""
    column = summary[(summary["split"] == split) & (summary["metric"] == metric) & (summary["status"] == "ok")]
    candidates = column[~column["fusion"].isin(BIHMF_FUSIONS) & column["encoder"].isin([encoder, NO_ENCODER])]
    if candidates.empty:
        return None
    best = candidates["mean"].idxmax() if higher_is_better(metric) else candidates["mean"].idxmin()
    return str(candidates.at[best, "encoder"]), str(candidates.at[best, "fusion"])


@dataclass(frozen=True)
class _Resampled:
    """One run's metrics on a test split: on all its proteins, and on each bootstrap resample."""

    run: RunRecord
    point: dict[str, float]
    samples: dict[str, np.ndarray]
    proteins: np.ndarray


class Bootstrapper:
    """Bootstrap arrays per (run, split), computed once and shared by every comparison using them.

    ``key`` names a run; the default (encoder, fusion, seed) is unique within one dataset's main
    runs, an ablation report prefixes the variant."""

    def __init__(self, runs: Sequence[RunRecord], predictions: Callable[[RunRecord], Predictions | None], settings: StatsSettings,
                 key: Callable[[RunRecord], tuple] = lambda run: run.key):
        self.runs = {key(r): r for r in runs}
        self.predictions = predictions
        self.settings = settings
        self.cache: dict[tuple[tuple, str], _Resampled | None] = {}

    def get(self, key: tuple, split: str) -> _Resampled | None:
        if (key, split) not in self.cache:
            run = self.runs[key]
            predictions = self.predictions(run)
            if predictions is None:
                self.cache[(key, split)] = None
            else:
                rows = split_rows(predictions, split)
                proteins = np.unique(rows["protein_id"])
                samples = bootstrap_metrics(run.task, rows, proteins, self.settings)
                self.cache[(key, split)] = _Resampled(run, evaluate_rows(run.task, rows), samples, proteins)
        return self.cache[(key, split)]


def seed_values(long: pd.DataFrame, encoder: str, fusion: str, split: str, metric: str) -> dict[int, float]:
    cell = long[(long["encoder"] == encoder) & (long["fusion"] == fusion) & (long["split"] == split) & (long["metric"] == metric)]
    return {int(s): float(v) for s, v in zip(cell["seed"], cell["value"]) if np.isfinite(v)}


def compare_cell(a: dict[int, float], b: dict[int, float], keys: tuple[tuple, tuple], split: str, metric: str,
                 boot: Bootstrapper) -> Comparison:
    """Paired t-test when two or more seeds are shared; otherwise a paired protein bootstrap
    on the lowest shared seed (or each model's lowest seed when they share none)."""
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        return paired_t(a, b, boot.settings.confidence)
    seed_a, seed_b = (shared[0], shared[0]) if shared else (min(a), min(b))
    first, second = boot.get((*keys[0], seed_a), split), boot.get((*keys[1], seed_b), split)
    if first is None or second is None:
        return Comparison("none", 0, a[seed_a] - b[seed_b], np.nan, np.nan, np.nan, "no test predictions saved")
    if not np.array_equal(first.proteins, second.proteins):
        raise ValueError(f"{split}: {first.run.path.parent} and {second.run.path.parent} saved test predictions for "
                         f"different proteins ({len(first.proteins)} vs {len(second.proteins)}); rerun the older one")
    if metric not in first.point or metric not in second.point:
        return Comparison("none", len(first.proteins), np.nan, np.nan, np.nan, np.nan,
                          "metric undefined on the saved predictions")
    nan = np.full(boot.settings.bootstrap_samples, np.nan)
    return bootstrap_comparison(first.point[metric] - second.point[metric], first.samples.get(metric, nan),
                                second.samples.get(metric, nan), len(first.proteins), boot.settings.confidence)


def is_better(delta: float, metric: str) -> bool | None:
    """Whether the compared model's mean (Bi-HMF, an ablation variant) is better in the metric's
    direction; None for a tie or no value."""
    if not np.isfinite(delta) or delta == 0:
        return None
    return bool(delta > 0) == higher_is_better(metric)


def is_significant(result: Comparison, confidence: float) -> bool | None:
    """p below 1 - confidence (t-test) or an interval excluding 0 (bootstrap); None if untestable,
    also a bootstrap past its limits (too few proteins, too many undefined resamples)."""
    if result.test == "paired t-test" and np.isfinite(result.p_value):
        return bool(result.p_value < 1 - confidence)
    if result.test == "bootstrap" and np.isfinite(result.ci_low) and not result.limit:
        return bool(result.ci_low > 0 or result.ci_high < 0)
    return None


def flag(value: Any) -> bool:
    """True only for a real True (a None/NaN flag from pandas must not read as True)."""
    return isinstance(value, (bool, np.bool_)) and bool(value)


def result_fields(result: Comparison, metric: str, confidence: float) -> dict[str, Any]:
    """A comparison's columns in the stats CSVs (the main report's and the ablation report's)."""
    return {"test": result.test, "n": result.n, "delta": result.delta, "ci_low": result.ci_low,
            "ci_high": result.ci_high, "p_value": result.p_value, "better": is_better(result.delta, metric),
            "significant": is_significant(result, confidence), "resamples": result.resamples,
            "undefined_resamples": result.undefined_resamples, "note": "; ".join(filter(None, (result.limit, result.note)))}


def compare(runs: Sequence[RunRecord], summary: pd.DataFrame, predictions: Callable[[RunRecord], Predictions | None],
            settings: StatsSettings) -> pd.DataFrame:
    """One row per Bi-HMF row × test column: the best baseline, the test used and its result."""
    long = metric_frame(runs)
    boot = Bootstrapper(runs, predictions, settings)
    records = []
    ok = summary[summary["status"] == "ok"]
    bihmf_rows = dict.fromkeys(ok.loc[ok["fusion"].isin(BIHMF_FUSIONS), ["encoder", "fusion"]].itertuples(index=False, name=None))
    for encoder, fusion in bihmf_rows:
        for split, metric in shown_columns(summary):
            baseline = best_baseline(summary, encoder, split, metric)
            a = seed_values(long, encoder, fusion, split, metric)
            if baseline is None or not a:
                continue
            b = seed_values(long, *baseline, split, metric)
            result = compare_cell(a, b, ((encoder, fusion), baseline), split, metric, boot)
            records.append({
                "encoder": encoder, "fusion": fusion, "split": split, "metric": metric,
                "baseline_encoder": baseline[0], "baseline_fusion": baseline[1],
                **result_fields(result, metric, settings.confidence),
            })
    return pd.DataFrame.from_records(records, columns=STATS_COLUMNS)


def comparison_text(entry: pd.Series, baseline: str | None = None) -> str:
    """One cell: ``Δ [CI], p vs baseline (test, n)``; what could not be tested says why.
    ``baseline`` defaults to the entry's best-baseline row (an ablation compares with its default)."""
    baseline = baseline or f"{entry['baseline_encoder']}/{entry['baseline_fusion']}"
    if not np.isfinite(entry["delta"]):
        return f"vs {baseline}: {entry['note']}"
    text = number(entry["delta"], signed=True)
    if np.isfinite(entry["ci_low"]):
        text += f" [{number(entry['ci_low'], True)}, {number(entry['ci_high'], True)}]"
    if entry["test"] == "paired t-test":
        text += f", p={entry['p_value']:.3g}" if np.isfinite(entry["p_value"]) else ", p undefined"
        return f"{text} vs {baseline} (t-test, {entry['n']} seeds)"
    if entry["test"] == "bootstrap":
        note = f"; {entry['note']}" if isinstance(entry["note"], str) and entry["note"] else ""
        return f"{text} vs {baseline} (bootstrap, {entry['n']} proteins{note})"
    return f"{text} vs {baseline} ({entry['note']})"


def comparison_table(comparisons: pd.DataFrame, summary: pd.DataFrame) -> Table:
    """Rows = Bi-HMF rows, columns = the results table's test columns; significant cells bold."""
    columns = shown_columns(summary)
    table = Table(["encoder", "fusion", *(f"{split} {metric}" for split, metric in columns)])
    cells = comparisons.set_index(["encoder", "fusion", "split", "metric"])
    bihmf = summary[summary["fusion"].isin(BIHMF_FUSIONS)]
    rows = dict.fromkeys(bihmf[["encoder", "fusion"]].itertuples(index=False, name=None))
    status = summary.set_index(["encoder", "fusion", "split", "metric"])["status"]
    for encoder, fusion in rows:
        entries = []
        for column in columns:
            key = (encoder, fusion, *column)
            if key in cells.index:
                entry = cells.loc[key]
                entries.append(Cell(comparison_text(entry), flag(entry["significant"]) and flag(entry["better"])))
            else:
                entries.append(Cell("no baseline" if status[key] == "ok" else status[key]))
        table.add_row([encoder, fusion, *entries])
    return table
