"""Aggregate finished training runs into one dataset's tables (Markdown, LaTeX, CSV).

Each training run writes one ``metrics.json``; the report is the only place seeds are combined,
so every aggregation choice (sample std, best-cell marking, column order, what counts as
missing) lives here. Rows are the configured encoder × fusion pairs, so a run that has not
finished shows up as a "missing" row or cell instead of silently vanishing from the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bihmf.report.format import MISSING, UNDEFINED, Cell, Table, mean_std
from bihmf.run import RunKey, RunRecord, read_record
from bihmf.tasks.metrics import GROUP_MEAN_PREFIX, METRICS, higher_is_better

Row = tuple[str, str]  # encoder, fusion
SUMMARY_COLUMNS = ["encoder", "fusion", "split", "metric", "mean", "std", "n", "n_runs", "n_expected", "status", "best"]


def metric_rank(metric: str) -> tuple[int, int]:
    """The task's natural order: pooled metrics in registry order (e.g. RMSE, Pearson,
    Spearman, Kendall), then their per-group means in the same order."""
    base = metric.removeprefix(GROUP_MEAN_PREFIX)
    return (int(metric != base), list(METRICS).index(base))


def is_test_split(split: str) -> bool:
    return split == "test" or split.startswith("test_")


def split_order(dataset_cfg: dict[str, Any]) -> list[str]:
    """Evaluation splits in the order the config lists them: val, test, then each test subset
    (PPBS: 70, homology, topology, none) in the order of its label files."""
    subsets = [f["subset"] for f in dataset_cfg.get("label_files", []) if f["split"] == "test" and f.get("subset")]
    return ["val", "test", *(f"test_{s}" for s in dict.fromkeys(subsets))]


def load_runs(paths: Iterable[Path], dataset: str | None = None) -> list[RunRecord]:
    """Read every run; the same (encoder, fusion, seed) twice is an error, because a stale copy
    would otherwise count as an extra seed. With ``dataset`` given, a run of another dataset is
    an error too (it would land in the wrong table)."""
    runs: list[RunRecord] = []
    origin: dict[RunKey, Path] = {}
    for path in map(Path, paths):
        run = read_record(path)
        if dataset is not None and run.dataset != dataset:
            raise ValueError(f"{path}: run of dataset {run.dataset!r} given to the report of {dataset!r}")
        if run.key in origin:
            raise ValueError(f"{path}: duplicates run {run.label} from {origin[run.key]}")
        origin[run.key] = path
        runs.append(run)
    return runs


def metric_frame(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """Long format, one row per run, split and metric; an undefined value is NaN (kept, so a
    cell can say "undefined" rather than "missing")."""
    records = [
        {"encoder": r.encoder, "fusion": r.fusion, "seed": r.seed, "split": split, "metric": metric,
         "value": np.nan if value is None else value}
        for r in runs
        for split, values in r.scores.items()
        for metric, value in values.items()
    ]
    return pd.DataFrame.from_records(records, columns=["encoder", "fusion", "seed", "split", "metric", "value"])


def ordered_columns(long: pd.DataFrame, splits: Sequence[str]) -> list[tuple[str, str]]:
    """(split, metric) pairs: configured split order first (unknown splits after, as seen),
    metrics in the task's natural order within a split."""
    seen_splits = list(dict.fromkeys(long["split"]))
    split_pos = {s: i for i, s in enumerate([*splits, *(s for s in seen_splits if s not in splits)])}
    pairs = set(long[["split", "metric"]].itertuples(index=False, name=None))
    return sorted(pairs, key=lambda p: (split_pos[p[0]], metric_rank(p[1])))


def _best(values: pd.Series, metric: str) -> pd.Series:
    """Rows holding the best mean of a column (ties share the bold)."""
    finite = values.dropna()
    if finite.empty:
        return pd.Series(False, index=values.index)
    best = finite.max() if higher_is_better(metric) else finite.min()
    return pd.Series(np.isclose(values, best, rtol=0.0, atol=1e-12), index=values.index)


def row_counts(runs: Sequence[RunRecord], expected: Sequence[RunKey]) -> list[tuple[str, str, int, int]]:
    """(encoder, fusion, finished runs, expected runs) per table row: configured rows in order,
    then rows of runs the config no longer lists (they are reported, not hidden)."""
    expected_n: dict[Row, int] = {}
    for encoder, fusion, _ in expected:
        expected_n[(encoder, fusion)] = expected_n.get((encoder, fusion), 0) + 1
    finished: dict[Row, int] = {}
    for run in runs:
        finished[(run.encoder, run.fusion)] = finished.get((run.encoder, run.fusion), 0) + 1
    rows = list(dict.fromkeys([*expected_n, *finished]))
    return [(e, f, finished.get((e, f), 0), expected_n.get((e, f), 0)) for e, f in rows]


def summarise(runs: Sequence[RunRecord], expected: Sequence[RunKey], splits: Sequence[str]) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and seed count per row × (split, metric), tidy.

    ``status`` is ``ok``, ``missing`` (no finished run reported this cell) or ``undefined``
    (runs finished but the metric has no value, e.g. a correlation of constant predictions).
    With one seed ``std`` is NaN: the spread is unknown, not zero.
    """
    long = metric_frame(runs)
    rows = row_counts(runs, expected)
    records = []
    for split, metric in ordered_columns(long, splits) if not long.empty else []:
        column = long[(long["split"] == split) & (long["metric"] == metric)]
        for encoder, fusion, n_runs, n_expected in rows:
            values = column.loc[(column["encoder"] == encoder) & (column["fusion"] == fusion), "value"]
            finite = values.dropna()
            records.append({
                "encoder": encoder, "fusion": fusion, "split": split, "metric": metric,
                "mean": finite.mean() if len(finite) else np.nan,
                "std": finite.std(ddof=1) if len(finite) > 1 else np.nan,
                "n": len(finite), "n_runs": n_runs, "n_expected": n_expected,
                "status": "missing" if values.empty else ("undefined" if finite.empty else "ok"),
            })
    summary = pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS[:-1]).assign(best=False)
    for (_, metric), group in summary.groupby(["split", "metric"], sort=False):
        summary.loc[group.index, "best"] = _best(group["mean"], metric)
    return summary.astype({"n": int, "n_runs": int, "n_expected": int, "best": bool})


def column_header(split: str, metric: str) -> str:
    return f"{split} {metric} {'↑' if higher_is_better(metric) else '↓'}"


def _row_n(n_runs: int, n_expected: int) -> str:
    """Seeds behind a row: finished, and of how many expected when not all have finished."""
    return str(n_runs) if n_runs == n_expected or not n_expected else f"{n_runs}/{n_expected}"


def summary_cell(entry: pd.Series) -> Cell:
    if entry["status"] == "missing":
        return Cell(MISSING)
    if entry["status"] == "undefined":
        return Cell(UNDEFINED)
    text = mean_std(entry["mean"], entry["std"])
    if entry["n"] != entry["n_runs"]:
        text += f" (n={entry['n']})"
    return Cell(text, bold=bool(entry["best"]))


def shown_columns(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """The (split, metric) columns a paper table shows: test and its subsets."""
    pairs = dict.fromkeys(summary[["split", "metric"]].itertuples(index=False, name=None))
    return [pair for pair in pairs if is_test_split(pair[0])]


def results_table(summary: pd.DataFrame, rows: Sequence[tuple[str, str, int, int]]) -> Table:
    """Rows = encoder × fusion, columns = test metrics, cells ``mean ± std``, best in bold."""
    columns = shown_columns(summary)
    table = Table(["encoder", "fusion", "n", *(column_header(*c) for c in columns)])
    cells = summary.set_index(["encoder", "fusion", "split", "metric"])
    for encoder, fusion, n_runs, n_expected in rows:
        entries = [summary_cell(cells.loc[(encoder, fusion, *c)]) for c in columns]
        table.add_row([encoder, fusion, _row_n(n_runs, n_expected), *entries])
    return table


def missing_runs(runs: Sequence[RunRecord], expected: Sequence[RunKey]) -> list[RunKey]:
    present = {r.key for r in runs}
    return [key for key in expected if key not in present]


def tidy_csv(summary: pd.DataFrame, dataset: str) -> str:
    """Every split (validation too), one row per row × split × metric, for machines."""
    return summary.assign(dataset=dataset)[["dataset", *SUMMARY_COLUMNS]].to_csv(index=False)
