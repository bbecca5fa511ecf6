"""Write the report's files: one dataset's tables, statistics, provenance and figures, and
the summary across datasets. The workflow scripts only hand over paths and config values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bihmf.io import write_text_atomic
from bihmf.report.aggregate import load_runs, missing_runs, results_table, row_counts, summarise, tidy_csv
from bihmf.report.costs import read_cache_size, run_table
from bihmf.report.format import MISSING, NOT_AVAILABLE, NOT_GIVEN, Block, Table, html_body, page_html, page_markdown, to_latex
from bihmf.report.paper import benchmark_of_datasets, load_published, ours_frame, summary_notes, summary_table
from bihmf.report.plots import bars_figure, cost_figure, curves_figure, heatmap_figure, read_curves, save_figure
from bihmf.report.stats import BIHMF_FUSIONS, MAX_UNDEFINED_FRACTION, MIN_BOOTSTRAP_PROTEINS, StatsSettings, compare, comparison_table
from bihmf.run import Predictions, RunKey, RunRecord, read_test_predictions

log = logging.getLogger(__name__)

DATASET_OUTPUTS = (
    "table_md", "table_html", "table_tex", "table_csv", "stats_csv", "runs_csv",
    "bars_png", "bars_pdf", "heatmap_png", "heatmap_pdf", "curves_png", "curves_pdf", "cost_png", "cost_pdf",
)
SUMMARY_OUTPUTS = ("summary_md", "summary_html", "summary_tex", "summary_csv", "summary_front")


@dataclass(frozen=True)
class DatasetReport:
    """What one dataset's report is built from (paths come from the workflow's input lists)."""

    dataset: str
    task: str
    metrics: Sequence[Path]
    benchmarks: Sequence[Path]  # the training jobs' benchmark files, in the order of ``metrics``
    cache_index: Path
    expected: Sequence[RunKey]
    splits: Sequence[str]
    settings: StatsSettings


def _check_outputs(outputs: Mapping[str, Path], names: Sequence[str]) -> None:
    absent = [n for n in names if n not in outputs]
    if absent:
        raise ValueError(f"report outputs lack {absent}; expected keys {list(names)}")


def _runs(spec: DatasetReport) -> list[RunRecord]:
    if len(spec.benchmarks) != len(spec.metrics):
        raise ValueError(f"{spec.dataset}: {len(spec.metrics)} metrics files but {len(spec.benchmarks)} benchmark files")
    runs = load_runs(spec.metrics, spec.dataset)
    for run in runs:
        if run.task != spec.task:
            raise ValueError(f"{run.path}: task {run.task!r}, but dataset {spec.dataset!r} is configured as {spec.task!r}")
    return runs


def run_predictions(run: RunRecord) -> Predictions | None:
    """The run's saved test predictions; None for a run trained before they were saved, whose
    single-seed comparisons then say "no test predictions saved" instead of failing."""
    path = run.folder.test_predictions
    return read_test_predictions(path) if path.exists() else None


def _cells_without_value(summary: pd.DataFrame) -> list[str]:
    """Cells where some finished runs have no value (undefined metric), named one by one."""
    short = summary[(summary["n"] < summary["n_runs"]) & (summary["status"] != "missing")]
    return [f"{r.encoder}/{r.fusion} {r.split} {r.metric} ({r.n} of {r.n_runs} runs)" for r in short.itertuples()]


def _auxiliary_note(runs: Sequence[RunRecord]) -> list[str]:
    """Counts reported beside metrics (PSR: targets behind each per-target mean), as ranges."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for key, value in run.auxiliary.items():
            values.setdefault(key, []).append(value)
    return [f"`{key}`: {min(v):g}–{max(v):g} across runs" if min(v) != max(v) else f"`{key}`: {v[0]:g}"
            for key, v in values.items()]


def dataset_page(spec: DatasetReport, runs: Sequence[RunRecord], summary: pd.DataFrame, results: Table,
                 comparisons: Table) -> list[Block]:
    """The dataset's page: what was aggregated, what is missing, the two tables."""
    missing = missing_runs(runs, spec.expected)
    seeds = sorted({r.seed for r in runs})
    blocks: list[Block] = [
        ("h1", f"{spec.dataset}: benchmark results"),
        ("p", f"Task `{spec.task}`. {len(runs)} of {len(spec.expected)} expected runs finished"
              f"{' (seeds ' + ', '.join(map(str, seeds)) + ')' if seeds else ''}. Cells are mean ± sample std over "
              "seeds (one seed: the value alone); `n` is the number of seeds behind a row (finished/expected where "
              "runs are missing, `(n=k)` in a cell where only k of them have a value); best mean per column in "
              "**bold** (↑ higher is better, ↓ lower is better). Encoder `none` is the sequence-only model: it has "
              "no structure encoder and is trained once."),
    ]
    if missing:
        blocks.append(("p", f"**Missing runs** ({len(missing)}; their cells read \"{MISSING}\"): "
                            + ", ".join(f"{e}/{f} seed {s}" for e, f, s in missing) + "."))
    else:
        blocks.append(("p", "All expected runs finished."))
    undefined = _cells_without_value(summary)
    if undefined:
        blocks.append(("p", "**Undefined values** (the metric has no value, e.g. a correlation of constant "
                            "predictions): " + "; ".join(undefined) + "."))
    blocks += [
        ("h2", "Test metrics"), ("table", results),
        ("h2", "Bi-HMF vs the best baseline"),
        ("p", f"Per column, each Bi-HMF row ({', '.join(BIHMF_FUSIONS)}) against the non-Bi-HMF row with the best "
              "mean that uses the same structure encoder or none. Each cell: Δ = Bi-HMF − baseline, its "
              f"{spec.settings.confidence:.0%} confidence interval, the baseline and the test. Two or more shared "
              "seeds: paired t-test over them (t interval, p-value); one seed: paired bootstrap over test proteins "
              f"({spec.settings.bootstrap_samples} resamples, seed {spec.settings.seed}, percentile interval). "
              f"**Bold**: better at the {spec.settings.confidence:.0%} level. A bootstrap over fewer than "
              f"{MIN_BOOTSTRAP_PROTEINS} proteins, or with more than {MAX_UNDEFINED_FRACTION:.0%} of its resamples "
              "undefined, is never called significant (the cell says why)."),
        ("table", comparisons) if comparisons.rows else ("p", "No Bi-HMF row has finished runs."),
    ]
    auxiliary = _auxiliary_note(runs)
    if auxiliary:
        blocks.append(("p", "Counts beside the metrics: " + "; ".join(auxiliary) + "."))
    blocks.append(("p", f"All splits (validation too): `{spec.dataset}_table.csv`; tests: `{spec.dataset}_stats.csv`; "
                        f"per-run provenance and cost: `{spec.dataset}_runs.csv`."))
    return blocks


def attempts_note(costs: pd.DataFrame, dataset: str) -> list[Block]:
    """A paragraph naming the runs that took more than one attempt (resumed after a kill or a
    failure): their cost in the runs CSV and the cost figure is the sum of their attempts."""
    attempts = pd.to_numeric(costs["attempts"], errors="coerce") if "attempts" in costs else pd.Series(dtype=float)
    several = costs[attempts > 1]
    if several.empty:
        return []
    named = "; ".join(f"{r.encoder}/{r.fusion} seed {r.seed}: {int(r.attempts)} attempts" for r in several.itertuples())
    return [("p", f"Costs sum every attempt at a run (column `attempts` of `{dataset}_runs.csv`); runs that took more "
                  f"than one: {named}.")]


def write_dataset_report(spec: DatasetReport, outputs: Mapping[str, Path]) -> None:
    """Tables (Markdown, LaTeX, CSV), statistics, per-run provenance and the four figures."""
    _check_outputs(outputs, DATASET_OUTPUTS)
    runs = _runs(spec)
    missing = missing_runs(runs, spec.expected)
    log.info("%s: %d of %d expected runs finished; missing: %s", spec.dataset, len(runs), len(spec.expected),
             ", ".join(f"{e}/{f} seed {s}" for e, f, s in missing) or "none")
    rows = row_counts(runs, spec.expected)
    pairs = [(e, f) for e, f, _, _ in rows]
    summary = summarise(runs, spec.expected, spec.splits)
    results = results_table(summary, rows)
    comparisons = compare(runs, summary, run_predictions, spec.settings)
    stats_table = comparison_table(comparisons, summary)
    costs = run_table(runs, {r.key: Path(b) for r, b in zip(runs, spec.benchmarks)}, read_cache_size(spec.cache_index))

    page = dataset_page(spec, runs, summary, results, stats_table) + attempts_note(costs, spec.dataset)
    write_text_atomic(outputs["table_md"], page_markdown(page))
    write_text_atomic(outputs["table_html"], page_html(page))
    tex = to_latex(results, f"{spec.dataset}: test metrics, mean ± std over seeds; best in bold.", f"tab:{spec.dataset}")
    if stats_table.rows:
        tex += "\n" + to_latex(stats_table, f"{spec.dataset}: Bi-HMF vs the best baseline (Δ = Bi-HMF − baseline).",
                               f"tab:{spec.dataset}-stats")
    write_text_atomic(outputs["table_tex"], tex)
    write_text_atomic(outputs["table_csv"], tidy_csv(summary, spec.dataset))
    write_text_atomic(outputs["stats_csv"], comparisons.assign(dataset=spec.dataset).to_csv(index=False))
    write_text_atomic(outputs["runs_csv"], costs.to_csv(index=False))

    curves = read_curves(runs, {r.key: r.folder.curve for r in runs})
    figures = {
        "bars": bars_figure(runs, pairs, spec.splits, spec.dataset),
        "heatmap": heatmap_figure(summary, spec.task, spec.dataset),
        "curves": curves_figure(curves, pairs, spec.task, spec.dataset),
        "cost": cost_figure(costs, runs, pairs, spec.task, spec.dataset),
    }
    for name, fig in figures.items():
        save_figure(fig, Path(outputs[f"{name}_png"]), Path(outputs[f"{name}_pdf"]))
    log.info("%s: wrote %s", spec.dataset, ", ".join(str(outputs[k]) for k in DATASET_OUTPUTS))


def write_summary_report(tables: Mapping[str, Path], paper_benchmarks: Mapping[str, str | None],
                         rows: Sequence[tuple[str, str]], outputs: Mapping[str, Path], published_path: Path) -> None:
    """The cross-dataset table in the paper's layout, with published numbers and differences."""
    _check_outputs(outputs, SUMMARY_OUTPUTS)
    published = load_published(published_path)
    fills = benchmark_of_datasets(paper_benchmarks, published)
    frames = {dataset: pd.read_csv(path) for dataset, path in tables.items()}
    ours = ours_frame(frames, fills, rows, published)
    table, tidy, order = summary_table(ours, rows, published)
    notes = summary_notes(published, fills, list(paper_benchmarks), order)
    page: list[Block] = [
        ("h1", "Summary: all benchmarks beside the published numbers"),
        ("p", "Rows `ours` are mean ± sample std over seeds (n = seeds with a value), best of ours per column in "
              "**bold**. Published numbers are converted to our scale (percentages to fractions); `published` rows "
              "are the same model as the `ours` row above them, followed by Δ = ours − published; `published only` "
              "rows are related models this benchmark does not train; `re-run` rows are a later paper's re-run or a "
              f"public reproduction of a method, not its authors' numbers. \"{MISSING}\": not run here; "
              f"\"{NOT_AVAILABLE}\": no published number is known; \"{NOT_GIVEN}\": the source omits it."),
        ("table", table),
        ("list", notes),
    ]
    write_text_atomic(outputs["summary_md"], page_markdown(page))
    write_text_atomic(outputs["summary_html"], page_html(page))
    write_text_atomic(outputs["summary_front"], html_body(page))  # the HTML report's first page opens on it
    write_text_atomic(outputs["summary_tex"], to_latex(table, "Summary across benchmarks, ours beside published numbers.",
                                                       "tab:summary"))
    write_text_atomic(outputs["summary_csv"], tidy.to_csv(index=False))
    log.info("summary: benchmarks filled %s; wrote %s", fills, ", ".join(str(outputs[k]) for k in SUMMARY_OUTPUTS))
