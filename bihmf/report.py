"""Aggregate per-run metric JSONs into the benchmark's tables and figure.

Each training run writes one JSON; the report is the only place seeds are combined, so all
aggregation choices (ddof, best-cell marking, ordering) live here and nowhere else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bihmf.io import atomic_output, write_text_atomic
from bihmf.tasks.metrics import GROUP_MEAN_PREFIX, METRICS

GROUP = ["dataset", "encoder", "fusion"]
LONG_COLUMNS = [*GROUP, "seed", "split", "metric", "value"]
STATS = ("mean", "std", "n")
MISSING = "—"


def _require(run: Any, key: str, path: Path) -> Any:
    if not isinstance(run, dict) or key not in run:
        raise ValueError(f"{path}: missing required key {key!r}")
    return run[key]


def _finite_number(value: Any, key: str, path: Path) -> float:
    """Reject non-numbers and NaN/inf: a diverged run must fail the report, not average into it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: value at {key} is not a finite number: {value!r}")
    return float(value)


def _records_from_file(path: Path) -> list[dict[str, Any]]:
    try:
        run = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    ident = {key: _require(run, key, path) for key in (*GROUP, "seed")}
    for key in GROUP:
        if not isinstance(ident[key], str) or not ident[key]:
            raise ValueError(f"{path}: key {key!r} must be a non-empty string, got {ident[key]!r}")
    if isinstance(ident["seed"], bool) or not isinstance(ident["seed"], int):
        raise ValueError(f"{path}: key 'seed' must be an integer, got {ident['seed']!r}")
    splits = _require(run, "metrics", path)
    if not isinstance(splits, dict) or not splits:
        raise ValueError(f"{path}: key 'metrics' must be a non-empty mapping of split -> metrics")
    records = []
    for split, values in splits.items():
        if not isinstance(values, dict) or not values:
            raise ValueError(
                f"{path}: key metrics.{split} must be a non-empty mapping of metric -> value"
            )
        for metric, value in values.items():
            if value is None:  # undefined for this run (e.g. a correlation of constant predictions): a missing cell
                continue
            number = _finite_number(value, f"metrics.{split}.{metric}", path)
            records.append({**ident, "split": split, "metric": metric, "value": number})
    return records


def load_runs(paths: Iterable[Path]) -> pd.DataFrame:
    """Read run JSONs into long format, keeping the first-seen order of splits and metrics.

    The same (dataset, encoder, fusion, seed) in two files is an error: a stale re-run would
    otherwise be silently counted as an extra seed.
    """
    records: list[dict[str, Any]] = []
    origin: dict[tuple[Any, ...], Path] = {}
    for path in map(Path, paths):
        file_records = _records_from_file(path)
        key = tuple(file_records[0][k] for k in (*GROUP, "seed"))
        if key in origin:
            run_id = dict(zip((*GROUP, "seed"), key))
            raise ValueError(f"{path}: duplicates run {run_id} from {origin[key]}")
        origin[key] = path
        records.extend(file_records)
    if not records:
        raise ValueError("no metrics files given")
    return pd.DataFrame.from_records(records, columns=LONG_COLUMNS)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and seed count per (dataset, encoder, fusion) and split/metric.

    Rows are indexed by (dataset, encoder, fusion); columns are (split, metric, stat) in first-seen
    order. With one seed the std is NaN rather than 0: the spread is unknown, not zero.
    """
    stats = (
        runs.groupby([*GROUP, "split", "metric"], sort=False)["value"]
        .agg(mean="mean", std="std", n="count")  # pandas' std is the sample std (ddof=1)
    )
    wide = stats.unstack(["split", "metric"]).reorder_levels([1, 2, 0], axis=1)
    row_order = pd.MultiIndex.from_frame(runs[GROUP].drop_duplicates())
    column_order = [
        (split, metric, stat)
        for split, metric in runs[["split", "metric"]].drop_duplicates().itertuples(index=False)
        for stat in STATS
    ]
    columns = pd.MultiIndex.from_tuples(column_order, names=["split", "metric", "stat"])
    return wide.reindex(index=row_order, columns=columns)


def _best_rows(means: pd.Series, metric: str) -> pd.Series:
    """Rows holding the best mean; all-False for metrics with no declared direction.

    ``mean_<metric>`` (a per-group average such as PSR's per-target Spearman) improves in the
    same direction as ``<metric>``.
    """
    spec = METRICS.get(metric.removeprefix(GROUP_MEAN_PREFIX))
    if spec is None or means.isna().all():
        return pd.Series(False, index=means.index)
    best = means.max() if spec.higher_is_better else means.min()
    return pd.Series(np.isclose(means, best, rtol=0.0, atol=1e-12), index=means.index)


def _cell(mean: float, std: float, n: float, row_n: int, bold: bool) -> str:
    if np.isnan(mean):
        return MISSING
    text = f"{mean:.3f}" if n < 2 else f"{mean:.3f} ± {std:.3f}"
    if bold:
        text = f"**{text}**"
    return text if n == row_n else f"{text} (n={int(n)})"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_table(summary: pd.DataFrame, dataset: str) -> tuple[str, str]:
    """Markdown table for humans and tidy CSV (one row per group, split and metric) for machines.

    The ``n`` column is the largest seed count in the row; a cell aggregated over fewer seeds
    says so, so an incomplete sweep cannot pass for a complete one.
    """
    if dataset not in summary.index.get_level_values("dataset"):
        raise ValueError(f"dataset {dataset!r} not in summary")
    table = summary.xs(dataset, level="dataset")
    means = table.xs("mean", axis=1, level="stat")
    pairs = [pair for pair in means.columns if means[pair].notna().any()]  # other datasets' splits
    row_n = table.xs("n", axis=1, level="stat").max(axis=1).astype(int)
    bold = {pair: _best_rows(table[(*pair, "mean")], pair[1]) for pair in pairs}

    header = ["encoder", "fusion", "n", *(f"{split} {metric}" for split, metric in pairs)]
    rows = []
    for key, stats in table.iterrows():
        cells = [
            _cell(*(stats[(*pair, s)] for s in STATS), row_n[key], bool(bold[pair][key]))
            for pair in pairs
        ]
        rows.append([*key, str(row_n[key]), *cells])

    tidy = table.stack(["split", "metric"], future_stack=True).dropna(subset=["mean"])
    tidy = tidy.reset_index().assign(dataset=dataset, n=lambda d: d["n"].astype(int))
    csv_text = tidy[[*GROUP, "split", "metric", *STATS]].to_csv(index=False)
    return _markdown(header, rows), csv_text


def _is_test_split(split: str) -> bool:
    return split == "test" or split.startswith("test_")


def plot_metrics(runs: pd.DataFrame, dataset: str, out_png: Path) -> None:
    """Grouped bars (mean over seeds) with each seed as a dot, one panel per test-like split.

    Showing the individual seeds makes it visible when a difference between fusions is smaller
    than the seed-to-seed spread. With several encoders each bar group is an encoder/fusion pair,
    so encoders are never averaged together.
    """
    data = runs[(runs["dataset"] == dataset) & runs["split"].map(_is_test_split)]
    if data.empty:
        raise ValueError(f"no test splits ('test' or 'test_*') for dataset {dataset!r}")
    encoders = list(dict.fromkeys(data["encoder"]))
    label = data["fusion"] if len(encoders) == 1 else data["encoder"] + "\n" + data["fusion"]
    data = data.assign(group=label)
    groups = list(dict.fromkeys(data["group"]))
    metrics = list(dict.fromkeys(data["metric"]))
    splits = list(dict.fromkeys(data["split"]))

    width = 0.8 / len(metrics)
    panel_width = max(3.5, 1.0 + 0.4 * len(groups) * len(metrics))
    fig = Figure(figsize=(panel_width * len(splits), 4.5))
    axes = fig.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    for ax, split in zip(axes, splits):
        in_split = data[data["split"] == split]
        for j, metric in enumerate(metrics):
            values = in_split[in_split["metric"] == metric]
            x_of = {g: i - 0.4 + width * (j + 0.5) for i, g in enumerate(groups)}
            means = values.groupby("group", sort=False)["value"].mean()
            color = f"C{j}"
            ax.bar([x_of[g] for g in means.index], means.to_numpy(), width=width * 0.9,
                   color=color, alpha=0.75, label=metric)
            ax.scatter(values["group"].map(x_of), values["value"], s=14, color="black", zorder=3)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_title(split)
        ax.set_xlabel("fusion" if len(encoders) == 1 else "encoder / fusion")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("score (bar: mean over seeds, dots: seeds)")
    axes[-1].legend(title="metric", loc="best", fontsize="small")
    fig.suptitle(f"{dataset} — encoder{'s' if len(encoders) > 1 else ''}: {', '.join(encoders)}")
    fig.tight_layout()
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=150)


def write_report(metrics_paths: Iterable[Path], out_dir: Path, dataset: str) -> dict[str, Path]:
    """Write the Markdown table, tidy CSV and figure for one dataset; return their paths."""
    runs = load_runs(metrics_paths)
    runs = runs[runs["dataset"] == dataset]
    if runs.empty:
        raise ValueError(f"no runs for dataset {dataset!r} among the given metrics files")
    markdown, csv_text = format_table(summarise(runs), dataset)
    n_runs = len(runs.drop_duplicates([*GROUP, "seed"]))
    seeds = sorted(runs["seed"].unique().tolist())
    intro = (
        f"# {dataset}: benchmark results\n\n"
        f"Aggregated {n_runs} runs over {len(seeds)} seed{'s' if len(seeds) != 1 else ''} "
        f"({', '.join(map(str, seeds))}); cells are mean ± sample std over seeds, "
        f"best mean per column in bold.\n\n"
    )
    out_dir = Path(out_dir)
    paths = {
        "table_md": out_dir / f"{dataset}_table.md",
        "table_csv": out_dir / f"{dataset}_table.csv",
        "plot_png": out_dir / f"{dataset}_metrics.png",
    }
    write_text_atomic(paths["table_md"], intro + markdown)
    write_text_atomic(paths["table_csv"], csv_text)
    plot_metrics(runs, dataset, paths["plot_png"])
    return paths
